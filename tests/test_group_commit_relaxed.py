"""Relaxed writes in a group-commit window (issue 17): a window whose every write may wait (a task
queued behind others) is not committed at the next idle turn of the loop but at its time, or as
soon as a write that may not wait joins it; so a busy daemon's queued submissions share the next
commit instead of one commit each. A real SQLite store and a real Mesh."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt import durable
from orchgpt.mesh import Mesh
from orchgpt.models import TaskState
from orchgpt.store.sqlite import SqliteStore
from tests.support.fake_ports import connect, ok, submit
from tests.test_group_commit import _committed_ids, _task

pytestmark = pytest.mark.timeout(60)


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _no_window_left() -> Iterator[None]:
    yield
    durable._open.clear()


async def test_a_window_of_relaxed_writes_waits_for_its_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=300)
    g = store.group_commit
    assert g is not None
    store.create_task(_task(1))
    store.relax()
    b = durable.barrier()
    assert b is not None
    await _turns(10)  # idle turns: a window of ordinary writes would be committed by now
    assert not b.done() and _committed_ids(tmp_path / "s.db") == set()
    store.create_task(_task(2))  # another relaxed one joins the same window
    store.relax()
    await asyncio.wait_for(durable.settle(b), 5)  # at the window's time, not never
    assert _committed_ids(tmp_path / "s.db") == {"t1", "t2"} and g.commits == 1
    store.close()


async def test_a_write_that_may_not_wait_commits_the_relaxed_window_at_the_next_idle_turn(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=10_000)
    store.create_task(_task(1))
    store.relax()
    b = durable.barrier()
    assert b is not None
    await _turns(5)
    assert not b.done()
    store.create_task(_task(2))  # not relaxed
    await asyncio.wait_for(durable.settle(b), 2)  # long before the 10 s window
    assert _committed_ids(tmp_path / "s.db") == {"t1", "t2"}
    store.close()


async def test_a_queued_submission_joins_the_next_busy_window_an_assigned_one_commits_at_once(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=10_000)
    g = store.group_commit
    assert g is not None
    mesh = Mesh(store, builtin_types=("echo",))
    a = connect(mesh, "a1")
    await durable.settle()
    t1 = submit(mesh, "t1")  # assigned at once: its RUN waits for this commit, so it is not delayed
    assert t1.state == TaskState.ASSIGNED
    await asyncio.wait_for(durable.settle(), 2)
    assert _committed_ids(tmp_path / "s.db") == {"t1"}
    before = g.commits
    submit(mesh, "t2")  # queued behind t1: nothing needs its commit at once
    await _turns(10)
    assert g.commits == before and "t2" not in _committed_ids(tmp_path / "s.db")
    mesh.on_result("a1", ok("t1"))  # t1 finishes, t2 is assigned: one commit holds all of it
    await asyncio.wait_for(durable.settle(), 2)
    assert g.commits == before + 1
    assert _committed_ids(tmp_path / "s.db") == {"t1", "t2"} and [r.task_id for r in a.runs] == ["t1", "t2"]
    again = sqlite3.connect(str(tmp_path / "s.db"))
    try:
        states = dict(again.execute("SELECT task_id, state FROM tasks"))
    finally:
        again.close()
    assert states == {"t1": "succeeded", "t2": "assigned"}
    store.close()
