"""echo: replies with its input. Used by tests and benchmarks.

Options: ``delay`` (seconds to wait before replying, to exercise cancellation
and requeueing), ``tokens`` (stream the input back word by word as token
events), ``fail`` (fail with this reason), ``ask`` (send the input to this agent, an id or
``type:NAME``, as a COMMAND and reply with its answer; ``ask_timeout`` seconds, default 10).
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
        if opts.get("ask"):
            answer = await ctx.ask(opts["ask"], ctx.task.input.encode(),
                                   timeout=float(opts.get("ask_timeout", "10") or 10))
            return Outcome(output=answer.decode(errors="replace"))
        if opts.get("tokens"):
            for word in ctx.task.input.split(" "):
                ctx.token(word + " ")
        return Outcome(output=ctx.task.input)

    async def on_command(self, sender: str, payload: bytes) -> bytes:
        return b"echo: " + payload
