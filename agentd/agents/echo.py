"""echo: replies with its input. Used by tests and benchmarks.

Options: ``delay`` (seconds to wait before replying, to exercise cancellation
and requeueing), ``tokens`` (stream the input back word by word as token
events; ``token_gap`` seconds between them; ``token_stamp``: each token is the wall-clock time
it was sent, ``%.6f`` seconds, for latency benchmarks: bench/cluster_tokens.py),
``fail`` (fail with this reason), ``ask`` (send the input to this agent, an id or
``type:NAME``, as a COMMAND and reply with its answer; ``ask_timeout`` seconds, default 10),
``record`` (a file: append "TASK_ID INPUT" to it, fsynced, each time a run finishes: tests
count runs with it), ``children`` (delegate that many echo sub-tasks, in parallel, each with a
stable key and the same ``record``; the i-th waits (i+1) x ``child_delay``), ``file`` (a path
relative to the workspace, without ``..``: write the input there and report it as an artifact,
which agentd then uploads to the daemon; checks file transfer with no model), ``file_bytes``
(with ``file``: write that many pseudo-random bytes, seeded by the task id, instead of the input),
``child_file`` (the children's ``file``), ``then`` (after the children, delegate one sub-task of
that type with their results as its inputs: their files reach it whichever host it runs on).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from orchgpt.models import Action, Delegation

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
            answer = await ctx.ask(
                opts["ask"], ctx.task.input.encode(), timeout=float(opts.get("ask_timeout", "10") or 10)
            )
            return Outcome(output=answer.decode(errors="replace"))
        if opts.get("tokens"):
            gap = float(opts.get("token_gap", "0") or 0)
            for word in ctx.task.input.split(" "):
                if gap:
                    await asyncio.sleep(gap)
                ctx.token(f"{time.time():.6f} " if opts.get("token_stamp") else word + " ")
        output = ctx.task.input
        if int(opts.get("children", "0") or 0) > 0:
            step = float(opts.get("child_delay", "0") or 0)
            extra = {"record": opts["record"]} if opts.get("record") else {}
            if opts.get("child_file"):
                extra["file"] = opts["child_file"]
            subs = [
                Delegation(
                    "echo",
                    f"{ctx.task.input}/{i}",
                    action=Action.RUN,
                    options={"delay": f"{step * (i + 1):g}", **extra},
                    key=f"child-{i}",
                )
                for i in range(int(opts["children"]))
            ]
            results = await ctx.delegate_many(subs)
            bad = [r for r in results if not r.ok]
            if bad:
                raise TaskFailed(f"{len(bad)} sub-task(s) failed: {bad[0].error}")
            output = " ".join(r.output for r in results)
            if opts.get("then"):  # one more sub-task, handed the children's results as inputs
                last = await ctx.delegate(
                    Delegation(opts["then"], ctx.task.input, action=Action.RUN, inputs=results, key="then")
                )
                if not last.ok:
                    raise TaskFailed(f"sub-task {opts['then']} failed: {last.error}")
                output += f" | {last.output}"
        if opts.get("file"):
            n = int(opts.get("file_bytes", "0") or 0)
            if n > 256 << 20:
                raise TaskFailed(f"option file_bytes: {n} is more than {256 << 20}")
            data = random.Random(ctx.task.task_id).randbytes(n) if n > 0 else ctx.task.input.encode()
            _write_artifact(ctx, opts["file"], data)
        if opts.get("record"):
            _record(opts["record"], f"{ctx.task.task_id} {ctx.task.input}\n")
        return Outcome(output=output)

    async def on_command(self, sender: str, payload: bytes) -> bytes:
        return b"echo: " + payload


def _write_artifact(ctx: TaskContext, name: str, data: bytes) -> None:
    from orchgpt.artifacts import ArtifactError, check_path

    try:
        parts = check_path(name)
    except ArtifactError as exc:
        raise TaskFailed(f"option file: {exc}") from None
    target = ctx.workspace.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        raise TaskFailed(f"option file: {name!r} is a symbolic link; refused")
    target.write_bytes(data)
    ctx.artifact("/".join(parts), kind="file")


def _record(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
