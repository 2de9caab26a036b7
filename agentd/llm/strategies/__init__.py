"""How an agent gets structured work out of a model, chosen by its `ModelProfile`.

A model that uses the tools needs no strategy: the agent's tool loop is it. For
one that does not (a small base model like the bundled gemma-3-270m), the
profile's ``text_strategy`` names the way round it:

    strategy = for_profile(await llm.profile())     # None: no way round, report the problems
    items, model = await strategy.ask(llm, ctx, COMPONENTS, ["a todo app"])

``fill_in`` (`FillIn`): the work asked for section by section with worked examples.
"""

from __future__ import annotations

from ..profiles import ModelProfile
from .fill_in import FillIn, FillInFailed, Section

__all__ = ["FillIn", "FillInFailed", "Section", "for_profile"]


def for_profile(profile: ModelProfile) -> FillIn | None:
    """The strategy for a model that did not use the tools (None: the profile names none)."""
    if profile.text_strategy == "fill_in":
        return FillIn()
    return None
