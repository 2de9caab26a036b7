"""Text templates and pattern matching."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from ..base import Block, BlockContext, BlockOutput

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][\w]*(?:\.[\w]+)*)\s*\}\}")
MAX_TEXT = 1_000_000  # characters a pattern is matched against
MAX_PATTERN = 1000  # characters of a pattern


def _lookup(values: dict[str, Any], path: str) -> Any:
    cur: Any = values
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(path)
    return cur


class TextTemplate(Block):
    id = "text.template"
    name = "Text template"
    description = "fills {{name}} (or {{name.key}}, {{name.0}}) placeholders from the values"
    categories = ("text",)

    class Input(BaseModel):
        template: str
        values: dict[str, Any] = Field(default_factory=dict)

    class Output(BaseModel):
        text: str

    test_input = {"template": "Hello, {{who.name}}!", "values": {"who": {"name": "mesh"}}}
    test_output = [("text", "Hello, mesh!")]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        missing: list[str] = []

        def fill(m: re.Match[str]) -> str:
            try:
                v = _lookup(input.values, m.group(1))
            except KeyError:
                missing.append(m.group(1))
                return m.group(0)
            return v if isinstance(v, str) else str(v)

        text = _FIELD.sub(fill, input.template)
        if missing:
            yield "error", f"no value for {', '.join(sorted(set(missing)))} in the template"
            return
        yield "text", text


class TextMatch(Block):
    id = "text.match"
    name = "Pattern match"
    description = (
        "matches a regular expression against the text: 'positive' with the match "
        "(or the group asked for), else 'negative' with the text"
    )
    categories = ("text", "logic")

    class Input(BaseModel):
        text: str
        pattern: str
        group: int | str = 0
        case_sensitive: bool = True

    class Output(BaseModel):
        positive: str
        negative: str
        groups: list[str | None]

    test_input = [
        {"text": "order 42 shipped", "pattern": r"order (\d+)", "group": 1},
        {"text": "nothing", "pattern": r"\d+"},
    ]
    test_output = [("positive", "42"), ("groups", ["42"]), ("negative", "nothing")]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        if len(input.pattern) > MAX_PATTERN:
            yield "error", f"the pattern is longer than {MAX_PATTERN} characters"
            return
        try:
            rx = re.compile(input.pattern, 0 if input.case_sensitive else re.IGNORECASE)
        except re.error as exc:
            yield "error", f"pattern {input.pattern!r} is not a regular expression: {exc}"
            return
        m = rx.search(input.text[:MAX_TEXT])
        if m is None:
            yield "negative", input.text
            return
        try:
            hit = m.group(input.group)
        except IndexError as exc:
            yield "error", f"the pattern has no group {input.group!r}: {exc}"
            return
        yield "positive", hit or ""
        yield "groups", list(m.groups())
