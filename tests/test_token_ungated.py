"""A token delta relayed to a watcher does not wait for an open group-commit window (issue 17,
session 4): it acknowledges nothing (its row is written with a later flush anyway), so only what
does (a status, a result) waits for the commit that holds it (orchgpt/wire/batching.py,
``Outbox.put_live``; orchgpt/servicer_clients.py, ``EventSubscription``). Order still holds: a
token queued after an envelope that waits goes with it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt import durable
from orchgpt.models import StatusEvent, Task, TaskState, TokenEvent
from orchgpt.servicer_clients import EventSubscription
from orchgpt.store.group_commit import HOLD_ENV
from orchgpt.store.sqlite import SqliteStore
from orchgpt.wire.batching import Outbox

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_window_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(HOLD_ENV, "1")  # every window stays open for its whole length (30 s below)
    yield
    durable._open.clear()


def _committed(path: Path) -> set[str]:
    c = sqlite3.connect(str(path))
    try:
        return {r[0] for r in c.execute("SELECT task_id FROM tasks")}
    finally:
        c.close()


def _kinds(batch: object) -> list[str]:
    assert batch is not None
    return [e.event.WhichOneof("body") for e in batch.envelopes]  # type: ignore[attr-defined]


async def test_a_watchers_token_delta_leaves_before_the_open_window_is_committed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", commit_window_ms=30_000)
    out = Outbox()
    sub = EventSubscription(out, limit=100)
    store.create_task(Task(task_id="t1", agent_type="echo", input="x", session_id="s"))  # opens a window
    assert durable.barrier() is not None
    sub.deliver(TokenEvent("t1", text="a", seq=1))
    batch = await asyncio.wait_for(out.next_batch(), 10)  # the old code waited for the 30 s window
    assert _kinds(batch) == ["token"]
    assert _committed(tmp_path / "s.db") == set()  # the window is still open: the token did not wait
    # a status acknowledges a change: it waits for the commit, and a token after it waits with it
    sub.deliver(StatusEvent("t1", state=TaskState.RUNNING, text="running", seq=2))
    sub.deliver(TokenEvent("t1", text="b", seq=3))
    pending = asyncio.ensure_future(out.next_batch())
    await asyncio.sleep(0.05)
    assert not pending.done()
    store.commit_now()
    assert _kinds(await asyncio.wait_for(pending, 10)) == ["status", "token"]
    assert _committed(tmp_path / "s.db") == {"t1"}
    store.close()
