"""Compatibility mode: tools described in the prompt, one call per reply in a fenced JSON block.

For servers and models without function calling. The model is told to answer

    ```json
    {"tool": "write_file", "arguments": {"path": "app.py", "content": "..."}}
    ```

`parse_call` finds that block, checks the tool name and validates the
arguments against the tool's JSON schema; a problem comes back as `Invalid`
with a message meant for the model, which the client feeds back and retries.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .schema import validate
from .types import ToolCall, ToolSpec


@dataclass
class NoCall:
    """The reply is a plain answer."""


@dataclass
class Call:
    call: ToolCall


@dataclass
class Invalid:
    """The reply tried to call a tool and got it wrong; ``error`` is written for the model."""

    error: str


Parsed = NoCall | Call | Invalid

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def instructions(tools: list[ToolSpec]) -> str:
    lines = [
        "You can use tools. To call a tool, reply with exactly one fenced JSON block, "
        "and nothing after it, of this form:",
        "```json",
        '{"tool": "<tool name>", "arguments": {<arguments as the tool\'s schema says>}}',
        "```",
        "Call at most one tool per reply; its result comes back in the next message. "
        "When you need no tool, answer normally, without such a block.",
        "",
        "Tools:",
    ]
    for t in tools:
        lines.append(f"- {t.name}: {t.description}")
        lines.append(f"  arguments schema: {json.dumps(t.parameters, separators=(',', ':'))}")
    return "\n".join(lines)


def feedback(error: str) -> dict[str, Any]:
    """The user message that tells the model what was wrong with its call."""
    return {
        "role": "user",
        "content": (
            f"Your tool call could not be used: {error}\n"
            'Reply again with exactly one fenced ```json block of the form {"tool": "<name>", '
            '"arguments": {...}} whose arguments follow the tool\'s schema, or answer without a tool call.'
        ),
    }


def _candidates(content: str) -> list[str]:
    blocks = [
        body
        for lang, body in _FENCE.findall(content)
        if lang.lower() in ("", "json", "tool", "tool_call", "tool_code") or body.lstrip().startswith("{")
    ]
    if not blocks:
        s = content.strip()
        if s.startswith("{") and s.endswith("}"):
            blocks = [s]
        else:  # a bare {"tool": ...} object inside prose
            i = content.find('{"tool"')
            if i >= 0:
                blocks = [content[i : content.rfind("}") + 1] or content[i:]]
    return blocks


def parse_call(content: str, tools: list[ToolSpec]) -> Parsed:
    """Find the tool call of a compat-mode reply; see the module doc."""
    by_name = {t.name: t for t in tools}
    for body in _candidates(content):
        body = body.strip()
        try:
            obj = _loads_lenient(body)
        except json.JSONDecodeError as exc:
            if '"tool"' in body or "'tool'" in body:
                return Invalid(
                    f"the JSON block is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                    "it may have been cut off or contain unescaped quotes or newlines"
                )
            continue
        if not isinstance(obj, dict):
            continue
        name = obj.get("tool")
        if name is None and "name" in obj and ("arguments" in obj or "parameters" in obj):
            name = obj["name"]
        if name is None:
            continue  # JSON that is not a call (data in an answer)
        if not isinstance(name, str) or name not in by_name:
            return Invalid(f"there is no tool named {name!r}; the tools are: {', '.join(by_name) or 'none'}")
        args: Any = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                return Invalid(f'"arguments" of {name} must be a JSON object, got a string that is not JSON')
        if not isinstance(args, dict):
            return Invalid(f'"arguments" of {name} must be a JSON object')
        problems = validate(args, by_name[name].parameters)
        if problems:
            return Invalid(f"the arguments of {name} do not match its schema: " + "; ".join(problems[:5]))
        return Call(ToolCall(id=new_call_id(), name=name, arguments=args))
    return NoCall()


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _loads_lenient(body: str) -> Any:
    """JSON, forgiving what small models get wrong: trailing commas, Python-style quoting."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as first:
        try:
            return json.loads(_TRAILING_COMMA.sub(r"\1", body))
        except json.JSONDecodeError:
            pass
        try:
            value = ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise first from None
        if isinstance(value, dict):
            return value
        raise first from None


def block(call_name: str, arguments: Any) -> str:
    return "```json\n" + json.dumps({"tool": call_name, "arguments": arguments}, ensure_ascii=False) + "\n```"


def to_compat(messages: list[dict[str, Any]], tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """The history as plain text messages with the tool instructions in the system prompt.

    Assistant ``tool_calls`` become fenced blocks (unless the content holds them
    already); ``tool`` messages become user messages naming the tool.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        content = _text(m.get("content"))
        if role == "assistant" and m.get("tool_calls"):
            parts = [content] if content else []
            for tc in m["tool_calls"]:
                fn = tc.get("function") or {}
                name = fn.get("name", "")
                names[tc.get("id", "")] = name
                if not (content and '"tool"' in content and name in content):
                    raw = fn.get("arguments", "{}")
                    try:
                        args = json.loads(raw) if isinstance(raw, str) else raw
                    except json.JSONDecodeError:
                        args = raw
                    parts.append(block(name, args))
            out.append({"role": "assistant", "content": "\n\n".join(parts)})
        elif role == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id", ""), "the tool")
            out.append({"role": "user", "content": f"Result of tool {name}:\n{content}"})
        else:
            out.append({"role": role, "content": content})
    text = instructions(tools)
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": (out[0]["content"] + "\n\n" + text).strip()}
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def _text(content: Any) -> str:
    """Message content as text (OpenAI also allows a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)
