"""A calculator: arithmetic expressions evaluated from their syntax tree (never eval)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from orchgpt.errors import ErrorCode

from ...errors import AgentdError
from ..base import Block, BlockContext, BlockOutput

_BIN: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UN: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
}
_CONSTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 1000
MAX_LENGTH = 1000


class CalcError(AgentdError, ValueError):
    """An expression the calculator refuses or cannot evaluate."""

    code = ErrorCode.INVALID_ARGUMENT


def evaluate(expression: str, variables: dict[str, float] | None = None) -> float:
    """The value of an arithmetic expression: numbers, + - * / // % **, parentheses, the
    functions in _FUNCS, pi, e and the given variables. Anything else is refused."""
    if len(expression) > MAX_LENGTH:
        raise CalcError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"not an expression: {exc.msg}") from None
    names = {**_CONSTS, **{k: float(v) for k, v in (variables or {}).items()}}

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            # floats: no unbounded integer arithmetic (10**10**9)
            return float(node.value)  # type: ignore[arg-type]
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
                raise CalcError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
            return _BIN[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UN:
            return _UN[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            raise CalcError(f"unknown name {node.id!r}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise CalcError(f"{type(node).__name__} is not allowed in an expression")

    try:
        result = float(ev(tree))
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        if isinstance(exc, CalcError):
            raise
        raise CalcError(f"{type(exc).__name__}: {exc}") from None
    if not math.isfinite(result):
        raise CalcError(f"the result is not a finite number ({result})")
    return result


class Calculator(Block):
    id = "calculator"
    name = "Calculator"
    description = "evaluates an arithmetic expression (+ - * / // % **, abs, round, sqrt...) safely"
    categories = ("math",)

    class Input(BaseModel):
        expression: str
        variables: dict[str, float] = Field(default_factory=dict)

    class Output(BaseModel):
        result: float

    test_input = [
        {"expression": "(a + 2) * 3 ** 2", "variables": {"a": 1}},
        {"expression": "sqrt(16) - abs(-1)"},
    ]
    test_output = [("result", 27.0), ("result", 3.0)]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        try:
            yield "result", evaluate(input.expression, input.variables)
        except CalcError as exc:
            yield "error", f"expression {input.expression!r}: {exc}"
