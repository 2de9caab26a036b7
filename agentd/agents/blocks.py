"""blocks: runs one block (a graph node's execution) and returns its outputs.

The task's input is the node's inputs as a JSON object; options ``block_id`` (the block) and
``graph_node`` (the node, for the record). The output is the outputs as a JSON object (a pin
yielded several times: the list of its values); ``data["yields"]`` keeps every (pin, value) in
order for the graph runner. An output named ``error`` fails the task, naming the block.
HTTP requests are allowed only with ORCHGPT_BLOCKS_ALLOW_HTTP=true.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..blocks import BlockContext, BlockError, collect, get
from ..errors import TaskFailed
from ..runtime import Agent, Outcome, TaskContext, register

ALLOW_HTTP_ENV = "ORCHGPT_BLOCKS_ALLOW_HTTP"


def outputs_object(yields: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, list[Any]] = {}
    for pin, value in yields:
        out.setdefault(pin, []).append(value)
    return {pin: vals[0] if len(vals) == 1 else vals for pin, vals in out.items()}


@register
class BlocksAgent(Agent):
    type = "blocks"
    capabilities = ("blocks",)
    description = "runs graph blocks (one node execution a task)"
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        block_id = ctx.task.options.get("block_id", "")
        try:
            cls = get(block_id)
        except KeyError as exc:
            raise TaskFailed(str(exc.args[0])) from None
        try:
            data = json.loads(ctx.task.input or "{}")
        except ValueError as exc:
            raise TaskFailed(f"block {block_id}: the input is not JSON: {exc}") from None
        bctx = BlockContext(
            node_id=ctx.task.options.get("graph_node", ""),
            workspace=ctx.workspace,
            allow_http=os.environ.get(ALLOW_HTTP_ENV, "").strip().lower() in ("1", "true", "yes"),
            delegate=ctx.delegate,
            log=ctx.log,
        )
        try:
            yields = await collect(cls(), data, bctx)
        except BlockError as exc:
            raise TaskFailed(str(exc)) from None
        except Exception as exc:  # a bug in a block fails its node, named
            raise TaskFailed(f"block {block_id}: run raised {type(exc).__name__}: {exc}") from None
        return Outcome(
            output=json.dumps(outputs_object(yields), default=str),
            data={"yields": json.dumps(yields, default=str), "block_id": block_id},
        )
