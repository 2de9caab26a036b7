"""echo: replies with its input. Used by tests and benchmarks.

Options: ``delay`` (seconds to wait before replying, to exercise cancellation
and requeueing), ``tokens`` (stream the input back word by word as token
events), ``fail`` (fail with this reason).
"""

from __future__ import annotations

import asyncio

from ..errors import TaskFailed
from ..runtime import Agent, Outcome, TaskContext, register


@register
class EchoAgent(Agent):
    type = "echo"
    capabilities = ("echo",)
    description = "replies with its input"
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        opts = ctx.task.options
        delay = float(opts.get("delay", "0") or 0)
        if delay:
            ctx.log(f"waiting {delay:g}s")
            await asyncio.sleep(delay)
        if opts.get("fail"):
            raise TaskFailed(opts["fail"])
        if opts.get("tokens"):
            for word in ctx.task.input.split(" "):
                ctx.token(word + " ")
        return Outcome(output=ctx.task.input)
