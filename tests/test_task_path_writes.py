"""Issue 17, the task path's store writes: a fresh task's events are replayed from memory (no flush,
no read), and the routine RUNNING is no row write of its own; clients still see every state.

A real SQLite store (no group commit: each write is its own commit, so what is stored is what a
restart finds), its SQL observed through the connection's trace callback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt.mesh import Mesh
from orchgpt.models import EventKind, TaskEvent, TaskState
from orchgpt.store.sqlite import SqliteStore
from tests.support.fake_ports import FakeSpawner, FakeSubscriber, connect, ok, submit

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def sql(store: SqliteStore) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


def _running(task_id: str) -> TaskEvent:
    """What agentd sends first: any event of the assigned agent makes the task RUNNING."""
    return TaskEvent(task_id, EventKind.STATUS, state=TaskState.RUNNING, text="running on a1")


def _task_updates(sql: list[str], task_id: str) -> list[str]:
    return [s for s in sql if s.lstrip().upper().startswith("UPDATE TASKS") and task_id in s]


async def test_a_fresh_tasks_replay_neither_writes_nor_reads_the_store(store: SqliteStore, sql: list[str]) -> None:
    mesh = Mesh(store, builtin_types=("echo",))
    a = connect(mesh, "a1")
    submit(mesh, "t1")  # queued, then assigned at once: two events, both still buffered
    sql.clear()
    sub = FakeSubscriber()
    replay, following = mesh.replay_then_follow("t1", 0, sub)
    assert [(e.seq, e.state) for e in replay] == [(1, TaskState.QUEUED), (2, TaskState.ASSIGNED)]
    assert following
    assert not [s for s in sql if "task_events" in s or "messages" in s], sql  # no flush, no read
    assert mesh.replay_then_follow("t1", 1, FakeSubscriber())[0] == replay[1:]  # after_seq holds
    # the live events follow, numbered on; the RESULT closes the stream
    mesh.on_event("a1", _running("t1"))
    mesh.on_result("a1", ok("t1", "done"))
    assert [e.seq for e in sub.events] == [3, 4] and sub.closed == "task finished"
    assert a.runs[0].task_id == "t1"
    # once stored, a replay reads the store: the same events, in order
    stored = mesh.replay("t1")
    assert [(e.seq, e.kind) for e in stored] == [(e.seq, e.kind) for e in replay + sub.events]


async def test_once_a_fresh_tasks_events_are_written_its_replay_reads_them_back(
    store: SqliteStore, sql: list[str]
) -> None:
    mesh = Mesh(store, builtin_types=("echo",), spawner=FakeSpawner())
    submit(mesh, "t1")  # no agent: it stays queued
    mesh.flush()
    sql.clear()
    replay = mesh.replay("t1")
    assert replay and replay[0].state == TaskState.QUEUED
    assert any("task_events" in s for s in sql)  # read from the store now


async def test_running_is_written_with_the_next_flush_and_not_at_all_when_the_task_ends_first(
    store: SqliteStore, sql: list[str]
) -> None:
    mesh = Mesh(store, builtin_types=("echo",))
    connect(mesh, "a1")
    submit(mesh, "t1")
    assert store.get_task("t1").state == TaskState.ASSIGNED  # type: ignore[union-attr]
    sql.clear()
    mesh.on_event("a1", _running("t1"))
    assert mesh.get_task("t1").state == TaskState.RUNNING  # type: ignore[union-attr]  # clients see it now
    assert not _task_updates(sql, "t1")  # no row write of its own
    assert store.get_task("t1").state == TaskState.ASSIGNED  # type: ignore[union-attr]
    mesh.flush()  # the next flush of events (at most FLUSH_DELAY later) writes it
    assert store.get_task("t1").state == TaskState.RUNNING  # type: ignore[union-attr]
    assert [e.state for e in store.events("t1") if e.kind == EventKind.STATUS][-1] == TaskState.RUNNING

    submit(mesh, "t2")  # queued behind t1
    mesh.on_result("a1", ok("t1"))  # t2 assigned
    sql.clear()
    mesh.on_event("a1", _running("t2"))
    mesh.on_result("a1", ok("t2"))  # ends before a flush: one write, the final one
    updates = _task_updates(sql, "t2")
    assert len(updates) == 1 and "succeeded" in updates[0], updates
    t2 = store.get_task("t2")
    assert t2 is not None and t2.state == TaskState.SUCCEEDED
    # the history a client reads still holds every state, in order
    states = [e.state for e in store.events("t2") if e.kind in (EventKind.STATUS, EventKind.RESULT)]
    states = [st for i, st in enumerate(states) if not i or states[i - 1] != st]  # (a "waiting for" QUEUED too)
    assert states == [TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING, TaskState.SUCCEEDED], states


async def test_a_restart_finds_a_task_whose_running_was_not_written_held_for_its_agent(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    mesh = Mesh(store, builtin_types=("echo",), reconnect_grace=30)
    connect(mesh, "a1")
    submit(mesh, "t1")
    mesh.on_event("a1", _running("t1"))  # RUNNING, not written: a crash now
    store.close()
    again = SqliteStore(tmp_path / "s.db")
    try:
        mesh2 = Mesh(again, builtin_types=("echo",), reconnect_grace=30)
        assert mesh2.recover() == 1
        t = mesh2.get_task("t1")
        assert t is not None and t.state == TaskState.ASSIGNED and t.agent_id == "a1"
        assert mesh2.queued("echo") == []  # held for a1 (as a stored RUNNING would be), not run again
        connect(mesh2, "a1")
        mesh2.on_event("a1", _running("t1"))
        assert mesh2.get_task("t1").state == TaskState.RUNNING  # type: ignore[union-attr]
        mesh2.on_result("a1", ok("t1"))
        assert again.get_task("t1").state == TaskState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        again.close()
