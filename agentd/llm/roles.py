"""Role adaptation for chat templates that reject the ``system`` role (Mistral-style).

The system text is folded into the first user message, and consecutive
messages of the same role are merged so that user and assistant alternate.
"""

from __future__ import annotations

from typing import Any

from .compat import _text


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = [_text(m.get("content")) for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    preamble = "\n\n".join(s for s in system if s.strip())
    if preamble:
        for m in rest:
            if m.get("role") == "user":
                m["content"] = preamble + "\n\n" + _text(m.get("content"))
                break
        else:
            rest.insert(0, {"role": "user", "content": preamble})
    return merge_same_role(rest)


def merge_same_role(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.get("role") == m.get("role")
            and m.get("role") in ("user", "assistant", "system")
            and not prev.get("tool_calls")
            and not m.get("tool_calls")
        ):
            prev["content"] = _text(prev.get("content")) + "\n\n" + _text(m.get("content"))
        else:
            out.append(dict(m))
    return out
