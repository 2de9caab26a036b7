"""Value, dictionary and list helpers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..base import Block, BlockContext, BlockOutput


class StoreValue(Block):
    id = "value"
    name = "Value"
    description = "passes its input on unchanged: a constant, or a value to fan out to several nodes"
    categories = ("basic",)

    class Input(BaseModel):
        value: Any = Field(description="any JSON value")

    class Output(BaseModel):
        value: Any

    test_input = {"value": {"a": [1, 2]}}
    test_output = [("value", {"a": [1, 2]})]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        yield "value", input.value


class DictGet(Block):
    id = "dict.get"
    name = "Dictionary get"
    description = "the value under a key of a dictionary (output 'missing' when there is none)"
    categories = ("basic", "data")

    class Input(BaseModel):
        dictionary: dict[str, Any]
        key: str

    class Output(BaseModel):
        value: Any
        missing: str

    test_input = [{"dictionary": {"a": 1}, "key": "a"}, {"dictionary": {}, "key": "b"}]
    test_output = [("value", 1), ("missing", "b")]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        if input.key in input.dictionary:
            yield "value", input.dictionary[input.key]
        else:
            yield "missing", input.key


class DictSet(Block):
    id = "dict.set"
    name = "Dictionary set"
    description = "a copy of a dictionary with a key set to a value"
    categories = ("basic", "data")

    class Input(BaseModel):
        dictionary: dict[str, Any] = Field(default_factory=dict)
        key: str
        value: Any = None

    class Output(BaseModel):
        dictionary: dict[str, Any]

    test_input = {"dictionary": {"a": 1}, "key": "b", "value": 2}
    test_output = [("dictionary", {"a": 1, "b": 2})]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        yield "dictionary", {**input.dictionary, input.key: input.value}


class ListGet(Block):
    id = "list.get"
    name = "List item"
    description = "the item at an index of a list (negative counts from the end)"
    categories = ("basic", "data")

    class Input(BaseModel):
        items: list[Any]
        index: int = 0

    class Output(BaseModel):
        item: Any
        length: int

    test_input = {"items": ["a", "b", "c"], "index": -1}
    test_output = [("item", "c"), ("length", 3)]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        if not -len(input.items) <= input.index < len(input.items):
            yield "error", f"index {input.index} is out of range for a list of {len(input.items)}"
            return
        yield "item", input.items[input.index]
        yield "length", len(input.items)


class ListAppend(Block):
    id = "list.append"
    name = "List append"
    description = "a copy of a list with an item added at the end"
    categories = ("basic", "data")

    class Input(BaseModel):
        items: list[Any] = Field(default_factory=list)
        item: Any = None

    class Output(BaseModel):
        items: list[Any]

    test_input = {"items": [1], "item": 2}
    test_output = [("items", [1, 2])]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        yield "items", [*input.items, input.item]
