"""Checking the native tool calls of a reply against the tools' schemas."""

from __future__ import annotations

import json

from .schema import validate
from .types import ToolCall, ToolSpec


def per_call_errors(raw_calls: list[dict[str, str]], tools: list[ToolSpec]) -> list[str]:
    by_name = {t.name: t for t in tools}
    errors = []
    for c in raw_calls:
        name = c["name"]
        if name not in by_name:
            errors.append(f"there is no tool named {name!r}; the tools are: {', '.join(by_name)}")
            continue
        try:
            args = json.loads(c["arguments"]) if c["arguments"].strip() else {}
        except json.JSONDecodeError as exc:
            errors.append(f"the arguments of {name} are not valid JSON ({exc.msg})")
            continue
        if not isinstance(args, dict):
            errors.append(f"the arguments of {name} must be a JSON object")
            continue
        problems = validate(args, by_name[name].parameters)
        errors.append(
            f"the arguments of {name} do not match its schema: " + "; ".join(problems[:5]) if problems else ""
        )
    return errors


def check_native(raw_calls: list[dict[str, str]], tools: list[ToolSpec]) -> tuple[list[ToolCall], list[str]]:
    errors = [e for e in per_call_errors(raw_calls, tools) if e]
    if errors:
        return [], errors
    calls = [
        ToolCall(id=c["id"], name=c["name"], arguments=json.loads(c["arguments"]) if c["arguments"].strip() else {})
        for c in raw_calls
    ]
    return calls, []
