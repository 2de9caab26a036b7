"""A sub-task run by another daemon reaches its parent's live stream (issue 19, ParentRelay in
orchgpt/cluster_events.py): the watcher of a parent on daemon A gets the events of its sub-task
run on daemon B, every one once, in order, ending with its RESULT, before the parent's RESULT.

The flake this pins down: the parent's daemon read the sub-task's last stored seq (where its
relay starts) after the offer was committed, so a claimer quick enough (or this daemon paused
under load between the two statements) had stored more events, or finished the sub-task,
and the relay started after them (a gap) or not at all. Run 20 times with two CPU burners
beside it. The old code failed 4 delegations of about 95 with two or three such loops run at
once (a gap: seqs [1, 3, 4]; or only [1]); the fixed code none of 200.

Real daemons on a real PostgreSQL, a real agentd (echo) and an in-process Link (the boss).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind, TaskEvent
from tests.support.mesh import AgentProc, start_agent
from tests.test_cluster_messages import Boss, linked, listed_on, two

pytestmark = pytest.mark.timeout(120)

RUNS = 20


def burners(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` processes spinning on the CPU: this daemon paused between statements, as under load."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


async def test_the_parents_watcher_gets_every_event_of_its_sub_task_from_the_other_daemon(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(b, "echo-b"))  # the sub-tasks run on B
    bad: list[str] = []
    load = burners(2)
    try:
        async with linked(a, Boss(), "boss-1", tmp_path):  # the parents run on A, watched on A
            await listed_on(a, "echo-b", "boss-1")
            for i in range(RUNS):
                seen: list[TaskEvent] = []
                async with a.client(timeout=60) as c:
                    async for ev in c.submit(Command("boss", input=f"plan {i}", task_id=f"boss-{i}")):
                        seen.append(ev)
                        if ev.task_id == f"boss-{i}" and ev.kind == EventKind.RESULT:
                            break
                assert seen[-1].result is not None and seen[-1].result.output == f"succeeded:sub of plan {i}"
                sub = [e for e in seen if e.task_id != f"boss-{i}"]
                seqs = [e.seq for e in sub]
                if not sub or sub[-1].kind != EventKind.RESULT or seqs != list(range(1, len(sub) + 1)):
                    bad.append(f"run {i}: the sub-task's events in the parent's stream: {seqs}")
    finally:
        for p in load:
            p.kill()
            p.wait(5)
    assert not bad, "\n".join(bad)
