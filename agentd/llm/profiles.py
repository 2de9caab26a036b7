"""What a model server and model can do, as data: `ModelProfile`.

The client asks the profile instead of keeping flags it flips on errors.
A profile is built in layers, the later winning:

1. defaults (everything an OpenAI-compatible server should take);
2. a known seed, from the model name and the server (`SEEDS`: OpenAI's models,
   the bundled gemma-3-270m, llama.cpp servers);
3. what was learnt at run time, once: the first request a server rejects for a
   feature (tools, the system role, ``stream_options``, ``max_tokens``,
   ``temperature``; see `rejection`) is recorded in a `ProfileCache` per
   (base URL, model), shared by every `LLM` of the process, so the next task
   does not pay for the same 400 again;
4. the configuration (``ORCHGPT_TOOL_MODE``, ``ORCHGPT_FOLD_SYSTEM``,
   ``ORCHGPT_CONTEXT_WINDOW``, ``ORCHGPT_MAX_OUTPUT_TOKENS``): what the user
   said always wins.

    profile = PROFILES.resolve(settings.smart, "gemma-3-270m")
    profile.tool_mode(settings.smart.tool_mode)   # "compat": the model has no tools
    profile.fold_system                            # True: no system role
    profile.text_strategy                          # "fill_in": see agentd.llm.strategies
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from orchgpt import logs

log = logs.get("agentd.llm.profiles")

# How an agent gets structured work out of a model that does not use the tools
# (see agentd.llm.strategies): "fill_in" asks section by section with worked
# examples; "none" gives up with the tools' problems.
TEXT_STRATEGIES = ("fill_in", "none")


@dataclass(frozen=True)
class ModelProfile:
    """Capabilities of one model on one server; ``None`` means "not known yet: try it"."""

    name: str = "default"  # the seed it came from, for logs
    tools: bool | None = None  # native function calling (``tools`` in the request)
    system_role: bool | None = None  # takes ``system`` messages (else they are folded)
    stream_usage: bool = True  # takes ``stream_options: {include_usage: true}``
    max_completion_tokens: bool = False  # wants ``max_completion_tokens`` instead of ``max_tokens``
    unsupported_params: frozenset[str] = frozenset()  # sampling parameters it rejects (temperature)
    context_window: int | None = None  # tokens; None: the configured default
    max_output_tokens: int | None = None  # default max_tokens of a call; None: the server's
    quirks: frozenset[str] = frozenset()  # e.g. "base_model": continues patterns, echoes instructions
    text_strategy: str = "fill_in"  # see TEXT_STRATEGIES
    learnt: frozenset[str] = frozenset()  # the fields learnt at run time

    @property
    def fold_system(self) -> bool:
        """Whether system messages must be folded into the first user message."""
        return self.system_role is False

    def tool_mode(self, configured: str = "auto") -> str:
        """How tools go to the model: "native" or "compat" (configured "auto" follows `tools`)."""
        if configured != "auto":
            return configured
        return "compat" if self.tools is False else "native"

    def has(self, quirk: str) -> bool:
        return quirk in self.quirks


@dataclass(frozen=True)
class Seed:
    """A known server or model: ``match`` against the model name or the base URL."""

    match: re.Pattern[str]
    on: str  # "model" | "url"
    facts: dict[str, Any] = field(default_factory=dict)


_REASONING = {"max_completion_tokens": True, "unsupported_params": frozenset({"temperature"})}
SEEDS: tuple[Seed, ...] = (
    # The bundled local model (orchgpt.localmodel): a base model without a chat template
    # for tools or the system role; it continues a pattern well and echoes instructions.
    Seed(
        re.compile(r"gemma-?3-270m", re.I),
        "model",
        {
            "name": "gemma-3-270m",
            "tools": False,
            "system_role": False,
            "quirks": frozenset({"base_model", "echoes_prompt"}),
            "text_strategy": "fill_in",
        },
    ),
    # OpenAI's reasoning models reject max_tokens and any temperature but the default.
    Seed(
        re.compile(r"^(o1|o3|o4|gpt-5)", re.I),
        "model",
        {"name": "openai-reasoning", "tools": True, "system_role": True, **_REASONING},
    ),
    Seed(
        re.compile(r"^(gpt-|chatgpt-)", re.I),
        "model",
        {"name": "openai-chat", "tools": True, "system_role": True},
    ),
    # llama.cpp's server names the model after its GGUF file; tools need --jinja there.
    Seed(
        re.compile(r"\.gguf$", re.I),
        "model",
        {"name": "llama.cpp", "quirks": frozenset({"tokenize"})},
    ),
)


def seed_for(base_url: str, model: str) -> ModelProfile:
    """The known profile of a model on a server (defaults when nothing matches)."""
    name = model.lower().split("/")[-1]
    for seed in SEEDS:
        subject = name if seed.on == "model" else base_url
        if seed.match.search(subject):
            return ModelProfile(**seed.facts)
    return ModelProfile()


def configured(profile: ModelProfile, settings: Any) -> ModelProfile:
    """The profile with the configuration laid over it (``settings``: a ModelSettings)."""
    facts: dict[str, Any] = {"context_window": settings.context_window}
    if settings.tool_mode == "native":
        facts["tools"] = True
    elif settings.tool_mode == "compat":
        facts["tools"] = False
    if settings.fold_system is not None:
        facts["system_role"] = not settings.fold_system
    if settings.max_output_tokens is not None:
        facts["max_output_tokens"] = settings.max_output_tokens
    return replace(profile, **facts)


class ProfileCache:
    """Profiles per (base URL, model): the seed, refined by what was learnt. Thread-safe."""

    def __init__(self) -> None:
        self._learnt: dict[tuple[str, str], ModelProfile] = {}
        self._lock = threading.Lock()

    def get(self, base_url: str, model: str) -> ModelProfile:
        with self._lock:
            hit = self._learnt.get((base_url, model))
        return hit if hit is not None else seed_for(base_url, model)

    def resolve(self, settings: Any, model: str | None = None) -> ModelProfile:
        """The profile to use for a call: seed, learnt facts, then the configuration."""
        return configured(self.get(settings.url, model if model is not None else settings.model), settings)

    def learn(self, base_url: str, model: str, **facts: Any) -> ModelProfile:
        """Record facts found out at run time (each once); returns the new profile."""
        with self._lock:
            cur = self._learnt.get((base_url, model)) or seed_for(base_url, model)
            new = replace(cur, **facts, learnt=cur.learnt | frozenset(facts))
            self._learnt[(base_url, model)] = new
        log.info(
            "model_profile_learnt",
            url=base_url,
            model=model,
            seed=cur.name,
            **{k: _show(v) for k, v in facts.items()},
        )
        return new

    def forget(self, base_url: str | None = None) -> None:
        """Drop what was learnt (of one server, or of all)."""
        with self._lock:
            for key in [k for k in self._learnt if base_url is None or k[0] == base_url]:
                del self._learnt[key]


def _show(v: Any) -> str:
    return ",".join(sorted(v)) if isinstance(v, frozenset) else str(v).lower()


PROFILES = ProfileCache()  # the process's cache; an LLM may be given its own
