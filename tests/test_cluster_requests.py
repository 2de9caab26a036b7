"""A cancel sent through one daemon of a cluster while the daemon holding the task cannot hear
it (issue 19): paused (SIGSTOP) and its LISTEN connection cut by the server meanwhile, so a
NOTIFY alone would be lost. The request is a durable row: once the holder resumes, the task
is cancelled and its agent told. Real daemons, a real PostgreSQL, a real agentd.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind, TaskEvent
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

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


async def test_a_cancel_sent_while_the_holder_is_not_listening_is_applied_when_it_resumes(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = (
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(2)
    )
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
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)  # A hears nothing for a moment...
    try:
        cut = await asyncio.to_thread(cut_listen_connection, postgres_url, a)  # ...and its LISTEN is gone
        assert cut == 1
        async with b.client() as c:
            await c.cancel("long-1", "changed my mind")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    await asyncio.wait_for(watcher, 15)  # (not the 30 s run: cancelled)
    last = seen[-1]
    assert last.kind == EventKind.RESULT and last.result is not None, seen
    assert last.result.state == "cancelled" and "changed my mind" in last.result.error, last.result
    await await_for(
        lambda: "task_cancel_requested" in agent.log(), timeout=10, what="the agent on A told to stop the task"
    )
    assert "task_cancel_applied" in a.log()
