"""The current time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from ..base import Block, BlockContext, BlockOutput


def _is_iso(value: Any) -> bool:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


class CurrentTime(Block):
    id = "time.now"
    name = "Current time"
    description = "the current date and time: ISO 8601, or a strftime format; in a time zone"
    categories = ("time",)

    class Input(BaseModel):
        format: str = Field(default="", description="strftime format; empty: ISO 8601")
        timezone: str = "UTC"

    class Output(BaseModel):
        time: str
        unix: float

    test_input = {"timezone": "Europe/Paris"}
    test_output = [("time", _is_iso), ("unix", lambda v: v > 1.7e9)]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        try:
            tz = UTC if input.timezone in ("", "UTC") else ZoneInfo(input.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            yield "error", f"unknown time zone {input.timezone!r}"
            return
        now = datetime.now(tz)
        yield "time", now.strftime(input.format) if input.format else now.isoformat()
        yield "unix", now.timestamp()
