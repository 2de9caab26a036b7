"""Each block tests itself: its ``test_input`` run offline (with ``test_mock`` in place) must
yield its ``test_output``, in order; a predicate stands for a value it must accept."""

from __future__ import annotations

from typing import Any

from .base import Block, BlockContext, BlockError, collect


def _matches(expected: Any, got: Any) -> bool:
    if callable(expected) and not isinstance(expected, type):
        return bool(expected(got))
    return bool(expected == got)


async def self_test(cls: type[Block]) -> list[str]:
    """The problems of one block's self-test (empty: it passed); each names block and pin."""
    block = cls()
    for name, fake in cls.test_mock.items():
        setattr(block, name, fake)
    inputs = cls.test_input if isinstance(cls.test_input, list) else [cls.test_input]
    got: list[tuple[str, Any]] = []
    ctx = BlockContext(node_id="self-test", allow_http=False)
    for data in inputs:
        try:
            got += await collect(block, data, ctx)
        except BlockError as exc:
            return [str(exc)]
        except Exception as exc:  # a crash in run() is a failed self-test, named
            return [f"block {cls.id}: run raised {type(exc).__name__}: {exc}"]
    problems: list[str] = []
    if not cls.test_output:
        problems.append(f"block {cls.id}: declares no test_output")
    for i, (pin, expected) in enumerate(cls.test_output):
        if i >= len(got):
            problems.append(
                f"block {cls.id}: pin {pin!r}: expected an output, got none (it yielded {len(got)} output(s))"
            )
            continue
        gpin, gval = got[i]
        if gpin != pin:
            problems.append(f"block {cls.id}: output {i + 1}: expected pin {pin!r}, got pin {gpin!r}")
        elif not _matches(expected, gval):
            want = "a value the predicate accepts" if callable(expected) else repr(expected)
            problems.append(f"block {cls.id}: pin {pin!r}: expected {want}, got {gval!r}")
    if len(got) > len(cls.test_output):
        extra = ", ".join(p for p, _ in got[len(cls.test_output) :])
        problems.append(f"block {cls.id}: unexpected extra output(s): {extra}")
    return problems


async def test_all(blocks: dict[str, type[Block]]) -> dict[str, list[str]]:
    """Every block's problems, by id."""
    return {bid: await self_test(cls) for bid, cls in sorted(blocks.items())}
