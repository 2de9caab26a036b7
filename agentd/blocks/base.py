"""Blocks: small typed steps a graph is made of (docs/graphs.md).

    class Upper(Block):
        id = "text.upper"
        name = "Upper case"
        description = "the text in upper case"
        categories = ("text",)

        class Input(BaseModel):
            text: str

        class Output(BaseModel):
            text: str

        test_input = {"text": "hi"}
        test_output = [("text", "HI")]

        async def run(self, input: Input, ctx: BlockContext) -> BlockOutput:
            yield "text", input.text.upper()

``run`` yields ``(output_name, value)`` pairs; a pin may be yielded several times (each value
fans out to the linked nodes) and an output named ``error`` fails the node. ``execute``
validates the input against ``Input`` and every yielded value against its ``Output`` field;
a problem is a BlockError naming the block, the pin and the problem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from orchgpt.errors import ErrorCode
from orchgpt.models import Delegation, TaskResult

from ..errors import AgentdError

BlockOutput = AsyncIterator[tuple[str, Any]]
ERROR_PIN = "error"


class BlockError(AgentdError):
    """A block's input, output or run went wrong; the message names the block and the pin."""

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, block_id: str, pin: str, problem: str) -> None:
        self.block_id, self.pin, self.problem = block_id, pin, problem
        where = f"pin {pin!r}" if pin else "run"
        super().__init__(f"block {block_id}: {where}: {problem}")


@dataclass
class BlockContext:
    """What a running block may use: its node, its settings and (in the mesh) delegation."""

    node_id: str = ""
    workspace: Path | None = None
    allow_http: bool = False
    delegate: Callable[[Delegation], Awaitable[TaskResult]] | None = None
    log: Callable[[str], None] = field(default=lambda text: None)


class Block:
    """The base class of every block. Subclasses set the class attributes and ``run``."""

    id: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    categories: ClassVar[tuple[str, ...]] = ()
    Input: ClassVar[type[BaseModel]] = BaseModel
    Output: ClassVar[type[BaseModel]] = BaseModel
    # the self-test: an input (or several), the expected (pin, value or predicate) pairs in
    # order, and methods of the block replaced while it runs (name -> callable)
    test_input: ClassVar[dict[str, Any] | list[dict[str, Any]]] = {}
    test_output: ClassVar[list[tuple[str, Any]]] = []
    test_mock: ClassVar[dict[str, Callable[..., Any]]] = {}

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        raise NotImplementedError
        yield  # pragma: no cover  (makes this an async generator)

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The block as a catalog entry: id, name, description, categories, JSON Schemas."""
        return {
            "id": cls.id,
            "name": cls.name,
            "description": cls.description,
            "categories": list(cls.categories),
            "input_schema": cls.Input.model_json_schema(),
            "output_schema": cls.Output.model_json_schema(),
        }


def _problem(exc: ValidationError) -> tuple[str, str]:
    """(the pin, the problem) of pydantic's first error."""
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ())]
    return (loc[0] if loc else ""), (".".join(loc[1:]) + ": " if len(loc) > 1 else "") + err["msg"]


def validate_input(block: type[Block], data: Any) -> BaseModel:
    if not isinstance(data, dict):
        raise BlockError(block.id, "", f"the input must be an object of pins, not {type(data).__name__}")
    try:
        return block.Input.model_validate(data)
    except ValidationError as exc:
        pin, problem = _problem(exc)
        raise BlockError(block.id, pin, f"input: {problem}") from None


def validate_output(block: type[Block], pin: str, value: Any) -> Any:
    if pin == ERROR_PIN:
        return str(value)
    fields = block.Output.model_fields
    if pin not in fields:
        raise BlockError(block.id, pin, f"not an output of this block (outputs: {', '.join(fields)})")
    try:
        return TypeAdapter(fields[pin].annotation).validate_python(value)
    except ValidationError as exc:
        raise BlockError(block.id, pin, f"output: {exc.errors()[0]['msg']}") from None


async def execute(block: Block, data: Any, ctx: BlockContext) -> AsyncIterator[tuple[str, Any]]:
    """Run ``block`` on ``data`` (a dict of input pins), validating both sides."""
    cls = type(block)
    model = validate_input(cls, data)
    async for pin, value in block.run(model, ctx):
        yield pin, validate_output(cls, pin, value)


async def collect(block: Block, data: Any, ctx: BlockContext) -> list[tuple[str, Any]]:
    """Every (pin, value) the block yields, in order; an ``error`` output raises BlockError."""
    out: list[tuple[str, Any]] = []
    async for pin, value in execute(block, data, ctx):
        if pin == ERROR_PIN:
            raise BlockError(type(block).id, ERROR_PIN, str(value))
        out.append((pin, value))
    return out
