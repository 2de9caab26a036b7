"""The follower's ordering rules for events crossing daemons (issue 19, orchgpt/cluster_events.py,
cluster_live.py), on a real (in-memory) store: live events ahead of a missing one wait for
it, the stored rows fill the gap, a repeated number is dropped, the stored RESULT ends the
follow, and a watcher handed over after live events its daemon never stored does not get
those numbers twice. Also the live payload's round trip and its size limit.
"""

from __future__ import annotations

import asyncio

import pytest

from orchgpt.cluster_events import StoreFollowers, _SeqGuard
from orchgpt.cluster_live import MAX_PAYLOAD, decode, encode, fold, task_of
from orchgpt.models import EventKind, Task, TaskEvent
from orchgpt.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(20)


class Sub:
    """A watcher that keeps what it is given."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.closed = ""

    def deliver(self, event: TaskEvent) -> bool:
        self.seqs.append(event.seq)
        return True

    def close(self, reason: str) -> None:
        self.closed = reason


def tok(seq: int, text: str = "x") -> TaskEvent:
    return TaskEvent("t1", EventKind.TOKEN, seq=seq, text=text)


def setup() -> tuple[MemoryStore, StoreFollowers, list[asyncio.Task[None]]]:
    store = MemoryStore()
    store.create_task(Task(task_id="t1", agent_type="echo"))
    spawned: list[asyncio.Task[None]] = []

    async def read(task_id: str, after: int) -> list[TaskEvent]:
        return store.events(task_id, after)

    return store, StoreFollowers(store, read, lambda c: spawned.append(asyncio.create_task(c))), spawned


async def test_live_events_wait_for_a_missing_one_and_the_store_fills_it() -> None:
    store, f, spawned = setup()
    sub = Sub()
    assert f.follow("t1", sub, 0)
    await asyncio.gather(*spawned)  # the first poll: nothing stored yet
    f.live(tok(2))
    f.live(tok(3))
    assert sub.seqs == []  # 1 is missing: 2 and 3 wait
    store.append_events([tok(1)])
    await f.poll("t1")
    assert sub.seqs == [1, 2, 3]
    f.live(tok(3))  # a number it has had: dropped
    f.live(tok(4))
    assert sub.seqs == [1, 2, 3, 4]
    store.append_events([tok(2), tok(3), tok(4)])
    f.live(TaskEvent("t1", EventKind.RESULT, seq=5))  # never taken live: the store ends it
    assert sub.seqs == [1, 2, 3, 4] and not sub.closed
    store.append_events([TaskEvent("t1", EventKind.RESULT, seq=5)])
    await f.poll("t1")
    assert sub.seqs == [1, 2, 3, 4, 5] and sub.closed == "task finished"
    assert "t1" not in f


async def test_live_events_their_daemon_died_before_storing_are_stored_on_hand_over() -> None:
    store, f, spawned = setup()
    sub = Sub()
    store.append_events([tok(1)])
    assert f.follow("t1", sub, 0)
    await asyncio.gather(*spawned)
    f.live(tok(2))  # live, never stored: its daemon died
    f.live(tok(4))  # after a missing one: held, never delivered
    assert sub.seqs == [1, 2]
    (handed,) = f.hand_over("t1")  # this daemon runs it now: it stores 2, numbers on from it
    assert handed is sub and store.last_seq("t1") == 2
    assert [e.seq for e in store.events("t1")] == [1, 2]


def test_a_guarded_watcher_gets_no_number_twice() -> None:
    sub = Sub()
    guard = _SeqGuard(sub, 2)  # it had 2; the store could not take it
    assert guard == sub and hash(guard) == hash(sub) and guard in {sub}
    assert guard.deliver(tok(2, "new")) and sub.seqs == []
    assert guard.deliver(tok(3)) and sub.seqs == [3]


def test_the_live_payload_round_trips_and_stays_under_the_notify_limit() -> None:
    ev = tok(7, "héllo")
    (payload,) = fold([("t1", encode(ev))])
    assert task_of(payload) == "t1"
    (back,) = decode(payload)
    assert (back.task_id, back.seq, back.kind, back.text) == ("t1", 7, EventKind.TOKEN, "héllo")
    assert encode(tok(8, "é" * MAX_PAYLOAD)) == ""  # too large: the store carries it
    assert decode("t1") == [] and decode("{not json") == []


def test_a_burst_is_folded_per_task_in_order_under_the_limit() -> None:
    """Consecutive events of a task go in as few payloads as fit 7,900 bytes, in seq order;
    a batch notice stays after the events it names; another task's events apart."""
    other = TaskEvent(task_id="t2", seq=1, kind=EventKind.TOKEN, text="o")
    items: list[tuple[str, str] | str] = [("t1", encode(tok(q, "é" * 100))) for q in range(1, 60)]
    items[10:10] = [("t2", encode(other)), "t1 5"]
    payloads = fold(items)
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    assert len(payloads) <= 10  # 59 events of ~700 bytes (escaped twice): 11 a payload, not one each
    assert payloads.index("t1 5") == 2  # after t1 first payload (1-11) and t2
    seqs = [e.seq for p in payloads for e in decode(p) if e.task_id == "t1"]
    assert seqs == list(range(1, 60))
    assert [e.text for p in payloads for e in decode(p) if e.task_id == "t2"] == ["o"]
