"""Which feature of a request a server rejected, from its error: by status, then the
error's ``param`` / ``code`` (OpenAI and vLLM name the parameter), and only for
servers that give nothing but a message (llama.cpp, Mistral templates) by its text.

    features = rejected_features(exc, system=True)   # ["system_role"], ["tools"], [] ...
"""

from __future__ import annotations

from typing import Any

import openai

# The features the client can do without, as the profile names them.
TOOLS = "tools"
SYSTEM_ROLE = "system_role"
STREAM_USAGE = "stream_usage"
MAX_COMPLETION_TOKENS = "max_completion_tokens"
TEMPERATURE = "temperature"

REJECTED_STATUS = (
    400,
    422,
)  # the request itself was refused (not the key, the model or the server)

_PARAMS = {
    "tools": TOOLS,
    "tool_choice": TOOLS,
    "functions": TOOLS,
    "parallel_tool_calls": TOOLS,
    "stream_options": STREAM_USAGE,
    "stream_options.include_usage": STREAM_USAGE,
    "max_tokens": MAX_COMPLETION_TOKENS,
    "temperature": TEMPERATURE,
}


def is_rejection(exc: BaseException) -> bool:
    return isinstance(exc, openai.APIStatusError) and exc.status_code in REJECTED_STATUS


def error_fields(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of an OpenAI-style error body ({} when there is none)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return err
    return {}


def rejected_features(exc: BaseException, *, system: bool, text: str = "") -> list[str]:
    """The features the rejection points at, most specific first (empty: none of them).

    ``system``: whether the request held a system message; ``text``: the error
    message (see `failures.error_text`), used when the body names no parameter.
    """
    if not is_rejection(exc):
        return []
    err = error_fields(exc)
    param = str(err.get("param") or "")
    if param:
        if param.startswith("messages") and system and "role" in str(err.get("code") or text).lower():
            return [SYSTEM_ROLE]
        feature = _PARAMS.get(param) or _PARAMS.get(param.split(".")[0])
        return [feature] if feature else []
    # No parameter named: the message is all there is.
    t = text.lower()
    out = []
    if system and ("system" in t or "roles must alternate" in t):
        out.append(SYSTEM_ROLE)
    if "stream_options" in t:
        out.append(STREAM_USAGE)
    if "max_completion_tokens" in t:
        out.append(MAX_COMPLETION_TOKENS)
    if "temperature" in t:
        out.append(TEMPERATURE)
    if "tool" in t or "function" in t:
        out.append(TOOLS)
    return out
