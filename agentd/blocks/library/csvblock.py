"""Reading CSV text."""

from __future__ import annotations

import csv
import io
from typing import Any

from pydantic import BaseModel

from ..base import Block, BlockContext, BlockOutput

MAX_ROWS = 100_000


class ReadCsv(Block):
    id = "csv.read"
    name = "Read CSV"
    description = "parses CSV text: 'rows' (dictionaries by the header, or lists without one) and 'count'"
    categories = ("data", "text")

    class Input(BaseModel):
        contents: str
        delimiter: str = ","
        has_header: bool = True

    class Output(BaseModel):
        rows: list[dict[str, str] | list[str]]
        count: int

    test_input = {"contents": "name,qty\napple,3\npear,5\n"}
    test_output = [
        ("rows", [{"name": "apple", "qty": "3"}, {"name": "pear", "qty": "5"}]),
        ("count", 2),
    ]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        if len(input.delimiter) != 1:
            yield "error", f"the delimiter must be one character, not {input.delimiter!r}"
            return
        try:
            reader = csv.reader(io.StringIO(input.contents), delimiter=input.delimiter)
            lines = [r for _, r in zip(range(MAX_ROWS + 1), reader, strict=False) if r]
        except csv.Error as exc:
            yield "error", f"not CSV: {exc}"
            return
        rows: list[dict[str, str] | list[str]]
        if input.has_header and lines:
            head = lines[0]
            rows = [dict(zip(head, r, strict=False)) for r in lines[1:]]
        else:
            rows = list(lines)
        yield "rows", rows
        yield "count", len(rows)
