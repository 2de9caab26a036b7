"""Control flow: a condition (branch) and a step-through-items loop."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..base import Block, BlockContext, BlockOutput

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "contains": lambda a, b: b in a,
}


class Condition(Block):
    id = "condition"
    name = "Condition"
    description = (
        "compares two values; 'yes_output' or 'no_output' carries the matching value "
        "(the other branch's nodes do not run), 'result' the comparison"
    )
    categories = ("logic",)

    class Input(BaseModel):
        value1: Any
        operator: Literal["==", "!=", ">", "<", ">=", "<=", "contains"] = "=="
        value2: Any = None
        yes_value: Any = Field(default=None, description="sent on yes_output (default: value1)")
        no_value: Any = Field(default=None, description="sent on no_output (default: value1)")

    class Output(BaseModel):
        result: bool
        yes_output: Any
        no_output: Any

    test_input = [
        {"value1": 3, "operator": ">", "value2": 2, "yes_value": "big"},
        {"value1": "abc", "operator": "contains", "value2": "z"},
    ]
    test_output = [("result", True), ("yes_output", "big"), ("result", False), ("no_output", "abc")]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        try:
            ok = bool(_OPS[input.operator](input.value1, input.value2))
        except TypeError as exc:
            yield (
                "error",
                f"cannot compare {input.value1!r} {input.operator} {input.value2!r}: {exc}",
            )
            return
        yield "result", ok
        if ok:
            yield "yes_output", input.value1 if input.yes_value is None else input.yes_value
        else:
            yield "no_output", input.value1 if input.no_value is None else input.no_value


class StepThroughItems(Block):
    id = "loop.items"
    name = "Step through items"
    description = (
        "yields each item of a list (or each value of a dictionary) on 'item', with its "
        "'key': the nodes linked to them run once per item (a declared loop)"
    )
    categories = ("logic", "loop")

    class Input(BaseModel):
        items: list[Any] | dict[str, Any]

    class Output(BaseModel):
        item: Any
        key: int | str

    test_input = {"items": ["a", "b"]}
    test_output = [("item", "a"), ("key", 0), ("item", "b"), ("key", 1)]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        pairs = input.items.items() if isinstance(input.items, dict) else enumerate(input.items)
        for key, item in pairs:
            yield "item", item
            yield "key", key
