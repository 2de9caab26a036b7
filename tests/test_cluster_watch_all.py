"""Watch of every task across daemons (issue 19, orchgpt/cluster_all.py): a client on daemon
B watching every task (``Watch`` without a task id) sees the status events and the RESULT of
tasks run by an agent on daemon A, whether they were submitted on A or on B, each event once.

Real daemons (``--cluster``) on a real PostgreSQL server, a real agentd.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind, TaskEvent, TaskState
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(60)


async def listed(d: Daemon) -> bool:
    async with d.client() as c:
        return bool(await asyncio.wait_for(c.list_agents(), 10))


async def run(d: Daemon, task_id: str, text: str) -> None:
    async with d.client(timeout=30) as c:
        async for ev in c.submit(Command("echo", input=text, task_id=task_id, options={"tokens": "1"})):
            if ev.kind == EventKind.RESULT:
                assert ev.result is not None and ev.result.ok, ev.result


async def test_a_client_watching_every_task_on_b_sees_the_tasks_run_on_a(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = (
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(2)
    )
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: listed(b), timeout=20, what="the agent listed on the second daemon")
    got: list[TaskEvent] = []
    results: set[str] = set()

    async def watch_all() -> None:
        async with b.client(timeout=40) as c:
            async for ev in c.watch():
                got.append(ev)
                if ev.kind == EventKind.RESULT:
                    results.add(ev.task_id)
                    if {"all-on-a", "all-on-b"} <= results:
                        return

    watching = asyncio.create_task(watch_all())
    try:
        await await_for(lambda: "cluster_watch_all_asked" in a.log(), 20, what="daemon A asked for every task's events")
        await run(a, "all-on-a", "run on a")  # submitted where it runs: nothing is offered or followed
        await run(b, "all-on-b", "offered by b")  # offered by B, run on A
        await asyncio.wait_for(watching, 20)
    finally:
        watching.cancel()
    for task_id in ("all-on-a", "all-on-b"):
        mine = [e for e in got if e.task_id == task_id]
        seqs = [e.seq for e in mine]
        shown = [(e.seq, str(e.kind), e.text) for e in mine]
        assert seqs == sorted(set(seqs)), f"{task_id}: an event twice or out of order: {shown}"
        states = {e.state for e in mine if e.kind == EventKind.STATUS}
        assert TaskState.RUNNING in states, f"{task_id}: no RUNNING status on the other daemon: {states}"
        (res,) = [e for e in mine if e.kind == EventKind.RESULT]
        assert (
            res.result is not None
            and res.result.ok
            and res.result.output.strip().endswith("run on a" if task_id == "all-on-a" else "offered by b")
        ), res.result
