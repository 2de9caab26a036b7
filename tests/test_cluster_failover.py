"""A daemon of a cluster killed (SIGKILL) or stopped (SIGTERM) with tasks in flight (issue 19): its agent
moves to the other daemon (agentd --orchestrator A,B), the tasks it held are taken over
there (the running one by its agent's current_task, the rest when the lease expires),
and every task submitted on the survivor succeeds exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind, TaskEvent
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(150)

N = int(os.environ.get("ORCHGPT_CLUSTER_TASKS", "12"))  # 100: the done-when, by hand


async def agents_on(d: Daemon) -> list[str]:
    async with d.client() as c:
        return [a.agent_id for a in await asyncio.wait_for(c.list_agents(), 10)]


def runs(agent: AgentProc) -> Counter[str]:
    """How many times the agent ran each task (its task_done log lines)."""
    done: Counter[str] = Counter()
    for line in agent.log().splitlines():
        if '"task_done"' in line:
            done[json.loads(line)["task_id"]] += 1
    return done


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_the_agents_daemon_stopping_loses_and_repeats_nothing(
    sig: int, daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = (
        daemon_factory(
            "--no-spawn",
            "--cluster",
            "--store",
            postgres_url,
            "--reconnect-grace",
            "3",
            data_dir=tmp_path / f"data-{i}",
        ).start()
        for i in range(2)
    )
    agent = start_agent(a, "echo-a", extra_args=["--orchestrator", f"{a.address},{b.address}"])
    agents.append(agent)
    await await_for(lambda: agents_on(b), timeout=20, what="the agent listed on the second daemon")
    streams: dict[str, list[TaskEvent]] = {}

    async def submit(i: int) -> None:
        events = streams.setdefault(f"k-{i}", [])
        async with b.client(timeout=60) as c:
            cmd = Command("echo", input=f"n{i}", task_id=f"k-{i}", options={"delay": "0.3"})
            async for ev in c.submit(cmd):
                events.append(ev)

    running = [asyncio.create_task(submit(i)) for i in range(N)]
    await await_for(lambda: len(runs(agent)) >= 3, timeout=40, what="three tasks done on A's agent")
    a.stop(sig)
    await asyncio.wait_for(asyncio.gather(*running), 90)
    for task_id, events in streams.items():
        last = events[-1]
        assert last.kind == EventKind.RESULT and last.result is not None, (task_id, events)
        assert last.result.ok and last.result.output == task_id.replace("k-", "n"), last.result
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs)), (task_id, seqs)  # in order, none twice
    done = runs(agent)
    assert set(done) == set(streams) and max(done.values()) == 1, done  # each ran once
    assert "echo-a" in await agents_on(b)
    async with b.client() as c:  # /history on the survivor has them all, succeeded
        tasks = {t.task_id: t for t in await c.list_tasks(limit=100)}
    assert all(tasks[k].state == "succeeded" for k in streams), {k: tasks[k].state for k in streams}
