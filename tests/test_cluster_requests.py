"""A cancel or an approval answer sent through one daemon of a cluster while the daemon holding
the task cannot hear it (issue 19): paused (SIGSTOP) and its LISTEN connection cut by the
server meanwhile, so a NOTIFY alone would be lost. The request is a durable row: once the
holder resumes, the task is cancelled and its agent told, or the answer reaches the agent.
Real daemons, a real PostgreSQL, a real agentd (and an in-process agentd Link).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import paths_for
from orchgpt.models import ApprovalDecision, ApprovalResponse, Command, EventKind, TaskEvent
from tests.support.mesh import AgentProc, Daemon, await_for, issue, start_agent

pytestmark = pytest.mark.timeout(120)


def cut_listen_connection(postgres_url: str, daemon: Daemon) -> int:
    """pg_terminate_backend on the daemon's LISTEN connection; how many were cut."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"orchgpt-listen {daemon.address}"[:63],),
        ).fetchall()
    return len(rows)


@contextlib.contextmanager
def deaf(postgres_url: str, d: Daemon):  # type: ignore[no-untyped-def]
    """The daemon paused, and its LISTEN connection cut meanwhile; resumed at the end."""
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        assert cut_listen_connection(postgres_url, d) == 1
        yield
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)


def cluster(daemon_factory, postgres_url: str, tmp_path: Path) -> tuple[Daemon, Daemon]:  # type: ignore[no-untyped-def]
    a, b = (
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(2)
    )
    return a, b


async def test_a_cancel_sent_while_the_holder_is_not_listening_is_applied_when_it_resumes(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster(daemon_factory, postgres_url, tmp_path)
    agent = start_agent(a, "echo-a")
    agents.append(agent)

    async def listed() -> bool:
        async with b.client() as c:
            return any(x.agent_id == "echo-a" for x in await c.list_agents())

    await await_for(listed, timeout=20, what="the agent listed on the second daemon")
    seen: list[TaskEvent] = []

    async def run() -> None:
        async with b.client(timeout=60) as c:
            async for ev in c.submit(Command("echo", input="x", task_id="long-1", options={"delay": "30"})):
                seen.append(ev)

    watcher = asyncio.create_task(run())
    await await_for(
        lambda: any("waiting 30s" in e.text for e in seen), timeout=20, what="the task running on A's agent"
    )
    with deaf(postgres_url, a):  # A hears nothing, and its LISTEN connection is gone
        async with b.client() as c:
            await c.cancel("long-1", "changed my mind")
    await asyncio.wait_for(watcher, 15)  # (not the 30 s run: cancelled)
    last = seen[-1]
    assert last.kind == EventKind.RESULT and last.result is not None, seen
    assert last.result.state == "cancelled" and "changed my mind" in last.result.error, last.result
    await await_for(
        lambda: "task_cancel_requested" in agent.log(), timeout=10, what="the agent on A told to stop the task"
    )
    assert "task_cancel_applied" in a.log()


class AskingAgent(Agent):
    type = "asker"
    capabilities = ("asker",)
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        r = await ctx.approve("write_file", json.dumps({"path": "f.txt"}), "write f.txt")
        return Outcome(output=f"{r.decision}:{r.feedback}")


async def test_an_approval_answered_while_the_holder_is_not_listening_reaches_the_agent(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster(daemon_factory, postgres_url, tmp_path)
    issue(a.certs, "asker-1", "agent")
    link = Link(AskingAgent(), "asker-1", a.address, paths_for(a.certs, "asker-1"), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 15)

        async def listed() -> bool:
            async with b.client() as c:
                return any(x.agent_id == "asker-1" for x in await c.list_agents())

        await await_for(listed, timeout=20, what="the asker listed on the second daemon")

        async def run() -> str:
            async with b.client(timeout=60) as c:
                async for ev in c.submit(Command("asker", input="go", approval=True)):
                    if ev.kind == EventKind.APPROVAL and ev.approval is not None:
                        answer = ApprovalResponse(ev.approval.request_id, ApprovalDecision.FEEDBACK, feedback="g.txt")
                        with deaf(postgres_url, a):
                            await c.approve(ev.task_id, answer)
                    if ev.kind == EventKind.RESULT and ev.result is not None:
                        return ev.result.output
            return ""

        assert await asyncio.wait_for(run(), 20) == "feedback:g.txt"
    finally:
        await link.stop(grace=1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
