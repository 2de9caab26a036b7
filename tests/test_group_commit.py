"""Group commit in the SQLite store (issue 17): writes share one transaction per window, reads
see them at once, other connections only after the commit, and every answer waits for it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt import durable
from orchgpt.errors import StoreError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Task, TaskEvent
from orchgpt.store.group_commit import HOLD_ENV
from orchgpt.store.sqlite import SqliteStore
from orchgpt.wire.batching import Outbox

pytestmark = pytest.mark.timeout(60)


def _task(i: int) -> Task:
    return Task(task_id=f"t{i}", agent_type="echo", input=f"x{i}", session_id="s")


def _committed_ids(path: Path) -> set[str]:
    """What another connection (another process after a crash) sees: only committed rows."""
    c = sqlite3.connect(str(path))
    try:
        return {r[0] for r in c.execute("SELECT task_id FROM tasks")}
    finally:
        c.close()


@pytest.fixture(autouse=True)
def _no_window_left() -> Iterator[None]:
    yield
    durable._open.clear()  # a failing test's open window must not hold up the next test's answers


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOLD_ENV, "1")  # every window stays open for its whole length


async def test_writes_share_one_commit_and_reads_see_them_before_it(tmp_path: Path, held: None) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=300)
    g = store.group_commit
    assert g is not None
    for i in range(3):
        store.create_task(_task(i))
    assert durable.barrier() is not None
    assert store.get_task("t1") is not None  # the same connection reads the window's writes
    assert _committed_ids(tmp_path / "s.db") == set()  # not durable yet
    await durable.settle()
    assert _committed_ids(tmp_path / "s.db") == {"t0", "t1", "t2"}
    assert g.commits == 1 and durable.barrier() is None
    store.close()


async def test_a_failed_write_is_rolled_back_alone(tmp_path: Path, held: None) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=300)
    store.create_task(_task(1))
    with pytest.raises(StoreError, match="unknown task"):
        store.append_events([TaskEvent("nope", "status", seq=1)])
    store.create_task(_task(2))
    await durable.settle()
    assert _committed_ids(tmp_path / "s.db") == {"t1", "t2"}
    store.close()


async def test_a_failed_commit_fails_every_waiter_and_nothing_is_sent(tmp_path: Path, held: None) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=300)
    faults: list[str] = []
    store.on_fault = faults.append
    out = Outbox()
    store.create_task(_task(1))
    out.put(pb.Envelope(id="ack-of-t1"))  # an answer that depends on the write
    os.unlink(tmp_path / "s.db")  # the file is gone under the daemon: the commit is refused
    with pytest.raises(StoreError, match="was deleted"):
        await durable.settle()
    assert await asyncio.wait_for(out.next_batch(), 5) is None  # the answer never leaves
    assert out.error is not None and out.error[0] == "UNAVAILABLE" and "could not commit" in out.error[1]
    assert len(faults) == 1 and "was deleted" in faults[0]
    store.close()


async def test_an_idle_window_closes_at_the_next_turn_of_the_loop(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=10_000)  # not held: closes when idle
    store.create_task(_task(1))
    b = durable.barrier()
    assert b is not None
    await asyncio.wait_for(durable.settle(b), 2)  # long before the 10 s window
    assert _committed_ids(tmp_path / "s.db") == {"t1"}
    store.close()


async def test_an_answer_waits_for_the_commit(tmp_path: Path, held: None) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=200)
    out = Outbox()
    out.put(pb.Envelope(id="before"))  # nothing written yet: it goes at once
    first = await asyncio.wait_for(out.next_batch(), 1)
    assert first is not None and first.envelopes[0].id == "before"
    store.create_task(_task(1))
    out.put(pb.Envelope(id="after"))
    batch = await asyncio.wait_for(out.next_batch(), 5)
    assert batch is not None and batch.envelopes[0].id == "after"
    assert _committed_ids(tmp_path / "s.db") == {"t1"}  # it left only once t1 was durable
    store.close()


def test_without_a_loop_every_write_commits_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=50)
    store.create_task(_task(1))
    assert _committed_ids(tmp_path / "s.db") == {"t1"}
    store.close()


class _Aborted(Exception):
    pass


class _Context:
    """What the wire guard uses of a grpc.aio.ServicerContext."""

    def __init__(self) -> None:
        self.status: tuple[object, str] | None = None

    async def abort(self, code: object, details: str) -> None:
        self.status = (code, details)
        raise _Aborted(details)


async def test_a_unary_answer_waits_for_the_commit_and_a_failed_one_is_unavailable(tmp_path: Path, held: None) -> None:
    import grpc

    from orchgpt.wire_guard import _guard_unary

    store = SqliteStore(tmp_path / "s.db", commit_window_ms=200)

    async def cancel_task(request: pb.CancelTaskRequest, context: object) -> str:  # writes, then answers
        store.create_task(_task(int(request.task_id)))
        return "answer"

    guarded = _guard_unary("CancelTask", cancel_task)
    assert await asyncio.wait_for(guarded(pb.CancelTaskRequest(task_id="1"), _Context()), 5) == "answer"
    assert _committed_ids(tmp_path / "s.db") == {"t1"}  # answered only once t1 was durable

    ctx = _Context()
    call = asyncio.ensure_future(guarded(pb.CancelTaskRequest(task_id="2"), ctx))
    await asyncio.sleep(0.02)
    assert not call.done()  # held by the open window
    os.unlink(tmp_path / "s.db")
    with pytest.raises(_Aborted, match="could not commit"):
        await asyncio.wait_for(call, 5)
    assert ctx.status is not None and ctx.status[0] == grpc.StatusCode.UNAVAILABLE
    store.close()
