"""Checks of an agent's work that no model wrote: the record (orchgpt.checks) and the tools.

    outcome = attach(Outcome(output="..."), [Check("ruff", "ruff", PASSED, "no problems")])

`attach` stores the checks in ``outcome.checks`` (the result's ``checks``) and turns a
successful outcome into a failure when a required check failed. The check tools
live in submodules: `mutation` (the model's tests against broken copies of its code),
`lint` (ruff on Python code).
"""

from __future__ import annotations

from collections.abc import Iterable

from orchgpt.checks import (
    CHECKS_KEY,
    FAILED,
    PASSED,
    SKIPPED,
    Check,
    checks_of,
    dumps,
    failed_required,
    loads,
    summary,
)

from ..runtime import Outcome

__all__ = [
    "CHECKS_KEY",
    "FAILED",
    "PASSED",
    "SKIPPED",
    "Check",
    "attach",
    "checks_of",
    "dumps",
    "failed_required",
    "loads",
    "summary",
]


def attach(outcome: Outcome, checks: Iterable[Check]) -> Outcome:
    """The outcome with its checks in data; not ok when a required check failed."""
    cs = list(checks)
    outcome.checks = cs
    bad = failed_required(cs)
    if bad and outcome.ok:
        why = "; ".join(f"{c.name} check failed ({c.tool}): {c.detail}" for c in bad)
        outcome.ok = False
        outcome.error = outcome.error or why
        outcome.output = f"{outcome.output}; but {why}" if outcome.output else why
    return outcome
