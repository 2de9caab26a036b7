"""The scheduler's decisions on a real store (SQLite) with a recording submit: a claimed run
that a stopped daemon never submitted is submitted again (same task id), an agent type that is
not back yet is retried while the daemon settles and then fails with the reason, a task id
taken by another owner fails, and the loop sleeps to the next tick and stops on request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchgpt.errors import RoutingError
from orchgpt.models import Action, Command, Task, new_id
from orchgpt.scheduler import RETRY_AFTER_MS, Scheduler
from orchgpt.schedules import CLAIMED, FAILED, SUBMITTED, Schedule, plan, run_task_id
from orchgpt.store import Store, open_store

pytestmark = pytest.mark.timeout(30)
T0 = 1_800_000_000_000


@dataclass
class Submits:
    calls: list[tuple[str, str]] = field(default_factory=list)
    error: RoutingError | None = None
    owner_of_existing: str = ""

    def __call__(self, cmd: Command, owner: str) -> tuple[Task, bool]:
        self.calls.append((cmd.task_id, owner))
        if self.error is not None:
            raise self.error
        if self.owner_of_existing:
            return Task(task_id=cmd.task_id, agent_type=cmd.agent_type, submitted_by=self.owner_of_existing), False
        return Task(task_id=cmd.task_id, agent_type=cmd.agent_type, submitted_by=owner), True


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(str(tmp_path / "orchgpt.db"))
    s.add_schedule(Schedule("s1", "client:alice", "* * * * * */2", Command("echo", Action.RUN, "x"), next_run_ms=T0))
    return s


def test_a_claimed_run_never_submitted_is_submitted_again_with_its_task_id(store: Store) -> None:
    s = store.get_schedule("s1")
    assert s is not None
    p = plan(s, T0)
    assert p is not None and store.claim_tick(s, p, run_task_id("s1", T0), T0)  # then the daemon died
    sub = Submits()
    now = T0 + 1_000
    sched = Scheduler(store, sub, clock=lambda: now)
    sched.run_due()
    assert sub.calls == []  # too fresh: maybe another daemon is submitting it right now
    now = T0 + RETRY_AFTER_MS + 1
    sched.run_due()
    assert sub.calls[0] == (run_task_id("s1", T0), "client:alice")
    assert store.schedule_runs("s1")[-1].state == SUBMITTED and store.claimed_runs() == []


def test_unknown_type_is_retried_while_settling_then_fails_with_the_reason(store: Store) -> None:
    sub = Submits(error=RoutingError("unknown agent type 'echo'", code="NOT_FOUND"))
    now = T0
    sched = Scheduler(store, sub, clock=lambda: now, settle_s=3600)
    sched.run_due()
    assert [r.state for r in store.schedule_runs("s1")] == [CLAIMED] and sched._deferred
    sched.settle_s = 0  # the reconnect grace is over
    now = T0 + RETRY_AFTER_MS + 1
    sched.run_due()
    (run,) = [r for r in store.schedule_runs("s1") if r.tick_ms == T0]
    assert run.state == FAILED and "unknown agent type 'echo'" in run.error
    s = store.get_schedule("s1")
    assert s is not None and "unknown agent type" in s.last_error
    assert [c[0] for c in sub.calls].count(run_task_id("s1", T0)) == 2


def test_a_task_id_taken_by_another_owner_fails_the_run(store: Store) -> None:
    sub = Submits(owner_of_existing="client:mallory")
    Scheduler(store, sub, clock=lambda: T0).run_due()
    (run,) = store.schedule_runs("s1")
    assert run.state == FAILED and "in use by another owner" in run.error


async def test_the_loop_sleeps_to_the_next_tick_wakes_and_stops(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "loop.db"))
    sub = Submits()
    sched = Scheduler(store, sub, max_sleep=60)
    sched.start()
    await asyncio.sleep(0.2)
    from orchgpt.models import now_ms

    store.add_schedule(
        Schedule(
            new_id(),
            "client:a",
            "* * * * * *",
            Command("echo", Action.RUN, "x"),
            next_run_ms=now_ms() + 300,
        )
    )
    sched.wake()  # without it the loop would sleep max_sleep (60 s)
    deadline = asyncio.get_running_loop().time() + 10
    while not sub.calls and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert sub.calls
    await asyncio.wait_for(sched.stop(), 5)
    n = len(sub.calls)
    await asyncio.sleep(1.2)
    assert len(sub.calls) == n  # stopped: no more fires
