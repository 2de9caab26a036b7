"""Crash safety of the whole mesh: SIGKILL a real `orchgpt serve` while tasks run, restart it
on the same SQLite data directory, and account for every task (issue 6)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from bench.crash_recovery import Counts, run
from orchgpt.models import Action, Command, EventKind, TaskEvent, TaskState
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent
from tests.support.stores import daemon_store


def _check(c: Counts) -> None:
    detail = f"{c}"
    assert c.acknowledged == c.submitted == 100, detail
    # The kill happened while work was in flight, and the restart had work to recover.
    assert c.finished_before_kill < 100 and c.recovered_by_daemon > 0, detail
    assert c.lost == 0, detail
    assert c.unfinished == 0, detail
    assert c.succeeded + c.failed_with_reason == 100, detail
    assert c.failed_without_reason == 0 and c.cancelled == 0, detail
    assert c.completed_twice == 0, detail  # one RESULT per task in the store
    assert c.executed_twice == 0, detail  # and no agent finished a task twice
    assert c.resubmitted == 100 and c.resubmit_reran == 0, detail
    assert c.ok, c.problems


async def test_sigkill_with_remote_agents_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Hand-started agents outlive the daemon: they finish their tasks during the outage,
    reconnect to the restarted daemon and deliver the results they kept."""
    c = await asyncio.wait_for(run(tmp_path, tasks=100, agents=8, delay=0.3, mode="remote"), 110)
    _check(c)


async def test_sigkill_with_spawned_agents_requeues_their_tasks(tmp_path: Path) -> None:
    """Agents the daemon spawned die with it: their tasks are re-dispatched to new ones."""
    c = await asyncio.wait_for(run(tmp_path, tasks=100, agents=8, delay=0.3, mode="local"), 110)
    _check(c)
    assert c.requeued > 0  # the tasks running on the dead local agents ran again elsewhere


@pytest.mark.parametrize("kill", ["agents", "both", "cut"])
async def test_agents_killed_or_cut_lose_and_repeat_nothing(kill: str, tmp_path: Path) -> None:
    """Issue 11: SIGKILL every remote agent (and the daemon with them), or cut their streams
    again and again: still nothing lost and nothing run twice."""
    c = await asyncio.wait_for(run(tmp_path, tasks=30, agents=4, delay=0.3, mode="remote", kill=kill), 110)
    assert c.acknowledged == c.submitted == 30, c
    assert c.lost == 0 and c.unfinished == 0 and c.succeeded == 30, c
    assert c.completed_twice == 0 and c.executed_twice == 0, c
    assert c.resubmit_reran == 0, c
    assert c.ok, c.problems
    if kill == "cut":
        assert c.cuts >= 1


def _finishes(agent: AgentProc, task_id: str) -> int:
    n = 0
    for line in agent.log().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            n += r.get("event") == "task_done" and r.get("task_id") == task_id
    return n


async def _submit(daemon: Daemon, cmd: Command, timeout: float = 30) -> list[TaskEvent]:
    events: list[TaskEvent] = []

    async def go() -> None:
        async with daemon.client() as c:
            async for ev in c.submit(cmd):
                events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


async def test_resubmitted_task_id_never_runs_twice(daemon_factory, agents: list[AgentProc]) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn", "--reconnect-grace", "5").start()
    a = start_agent(d, "idem-1")
    agents.append(a)
    async with d.client() as c:
        await await_for(lambda: _has_agents(c, 1), 30, what="idem-1 to register")
    cmd = Command("echo", Action.RUN, "only once", task_id="order-42", options={"delay": "1"})

    # Twice at the same time: both streams follow the one task.
    first, second = await asyncio.gather(_submit(d, cmd), _submit(d, cmd))
    for events in (first, second):
        assert {e.task_id for e in events} == {"order-42"}
        assert events[-1].kind == EventKind.RESULT and events[-1].result is not None
        assert events[-1].result.output == "only once"
    # Again after it finished: the stored events are replayed, nothing runs.
    third = await _submit(d, Command("echo", Action.RUN, "changed input", task_id="order-42"))
    assert third[-1].result is not None and third[-1].result.output == "only once"
    # Again after a SIGKILL and a restart on the same data directory.
    d.stop(signal.SIGKILL)
    d.start(port=d.port)
    fourth = await _submit(d, cmd)
    assert fourth[-1].result is not None and fourth[-1].result.output == "only once"
    assert [e.seq for e in fourth] == sorted({e.seq for e in fourth})  # replayed once, in order
    async with d.client() as c:
        task, events, _ = await c.get_task("order-42")
        assert task.state == TaskState.SUCCEEDED and task.attempts == 1
        assert Counter(e.kind for e in events)[EventKind.RESULT] == 1
        assert len([t for t in await c.list_tasks(limit=100) if t.task_id == "order-42"]) == 1
    assert _finishes(a, "order-42") == 1
    d.stop()
    # The store on disk says the same.
    s = daemon_store(d)
    try:
        stored = s.get_task("order-42")
        assert stored is not None and stored.state == TaskState.SUCCEEDED and stored.attempts == 1
        assert [e.kind for e in s.events("order-42")].count(EventKind.RESULT) == 1
    finally:
        s.close()


async def _has_agents(c, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await c.list_agents()) >= n


@pytest.mark.parametrize("mode", ["remote"])
def test_bench_script_exits_zero_and_prints_the_counts(mode: str, tmp_path: Path) -> None:
    """`python -m bench.crash_recovery` is the script of the issue's "done when"."""
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.crash_recovery",
            "--mode",
            mode,
            "--tasks",
            "20",
            "--agents",
            "4",
            "--delay",
            "0.3",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=Path(__file__).resolve().parents[1],
    )
    out = r.stdout
    assert "submitted" in out and "lost" in out and "run twice" in out, out + r.stderr
    assert r.returncode == 0, out + r.stderr
