"""The mesh's fan-out: numbering each task's events, buffering them (and the IAC message log)
for the store, and delivering them to the subscribers of the task, of its ancestors, and
of every task.

This is the seam for events crossing daemons (issue 19): a daemon publishes here, and a
shared fan-out would carry the same numbered events to the subscribers of other daemons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from . import logs
from .errors import StoreError
from .models import SEQ_FROM, Task, TaskEvent, TokenEvent, new_id, now_ms
from .store import Store

log = logs.get("orchgpt.mesh")

FLUSH_EVENTS = 500  # buffered events written at once
FLUSH_DELAY = 0.05  # or after this many seconds


class Subscriber(Protocol):
    def deliver(self, event: TaskEvent) -> bool:
        """Queue an event; False when the subscriber is too slow and must be dropped."""
        ...

    def close(self, reason: str) -> None: ...


def number_deltas(ev: TaskEvent, seq: int) -> int:
    """A token event's seq when its first delta gets ``seq``: folded deltas are numbered
    ``data[SEQ_FROM]``..seq (what the agent put under that key is dropped)."""
    n = ev.deltas if isinstance(ev, TokenEvent) else 1
    if n > 1:
        ev.data[SEQ_FROM] = str(seq)
        return seq + n - 1
    if ev.data and SEQ_FROM in ev.data:
        del ev.data[SEQ_FROM]
    return seq


class EventFanout:
    def __init__(self, store: Store, parent_of: Callable[[str], str]) -> None:
        self.store = store
        self.parent_of = parent_of  # task id -> its parent's id while the task is unfinished
        self.seq: dict[str, int] = {}
        self.subs: dict[str, set[Subscriber]] = {}
        self.subs_all: set[Subscriber] = set()
        self.pending_events: list[TaskEvent] = []
        self.pending_messages: list[dict[str, object]] = []
        # issue 17: a task's routine RUNNING is not a row write of its own: the task row is
        # written with the next flush, unless the task has ended (its last write holds it) by then
        self.pending_tasks: dict[str, Task] = {}
        # tasks submitted here whose events are all still buffered: replayed from memory (no
        # flush, no read); a task leaves this once any of its events has been written
        self.fresh: dict[str, list[TaskEvent]] = {}
        self.flush_handle: asyncio.TimerHandle | None = None
        self.dropped = 0  # events a slow subscriber did not get (it was cut off)
        self.flush_delay = FLUSH_DELAY  # shorter in a cluster: watchers elsewhere read the store
        self.live: Callable[[TaskEvent], None] | None = None  # cluster: sent at once to the other daemons

    def start(self, task_id: str, last_seq: int = 0, fresh: bool = False) -> None:
        """Number the task's events from ``last_seq`` on; ``fresh``: a new task with no stored event."""
        self.seq[task_id] = last_seq
        if fresh and not last_seq:
            self.fresh[task_id] = []

    def flush(self) -> None:
        """Write buffered events to the store."""
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.pending_events:
            events, self.pending_events = self.pending_events, []
            fresh = self.fresh
            if fresh:
                for e in events:
                    fresh.pop(e.task_id, None)
            try:
                self.store.append_events(events)
            except StoreError as exc:
                log.error("store_write_failed", what="events", count=len(events), error=str(exc))
        if self.pending_messages:
            msgs, self.pending_messages = self.pending_messages, []
            try:
                self.store.record_messages(msgs)
            except StoreError as exc:
                log.error("store_write_failed", what="messages", count=len(msgs), error=str(exc))
        if self.pending_tasks:
            tasks, self.pending_tasks = self.pending_tasks, {}
            for t in tasks.values():
                if t.state.terminal:
                    continue
                try:
                    self.store.save_task(t)
                except StoreError as exc:
                    log.error("store_write_failed", what="task", task_id=t.task_id, error=str(exc))

    def defer_save(self, t: Task) -> None:
        """Write the task row with the next flush (soon: a flush is due while events are buffered)."""
        self.pending_tasks[t.task_id] = t
        if self.flush_handle is None:
            try:
                self.flush_handle = asyncio.get_running_loop().call_later(self.flush_delay, self.flush)
            except RuntimeError:
                self.flush()

    def log_message(
        self, type_: str, sender: str, recipient: str, task: Task | None = None, correlation_id: str = ""
    ) -> None:
        """The IAC message log: who sent what about which task (written with the events)."""
        self.pending_messages.append(
            {
                "id": new_id(),
                "type": type_,
                "sender": sender,
                "recipient": recipient,
                "task_id": task.task_id if task else "",
                "session_id": task.session_id if task else "",
                "correlation_id": correlation_id,
                "ts_ms": now_ms(),
            }
        )

    def publish(self, ev: TaskEvent) -> None:
        seq = number_deltas(ev, self.seq.get(ev.task_id, 0) + 1)
        self.seq[ev.task_id] = seq
        ev.seq = seq
        self.pending_events.append(ev)
        if self.fresh:
            mine = self.fresh.get(ev.task_id)
            if mine is not None:
                mine.append(ev)
        if len(self.pending_events) >= FLUSH_EVENTS:
            self.flush()
        elif self.flush_handle is None:
            try:
                self.flush_handle = asyncio.get_running_loop().call_later(self.flush_delay, self.flush)
            except RuntimeError:
                self.flush()
        if self.live is not None:
            self.live(ev)
        self.deliver(ev)

    def deliver(self, ev: TaskEvent, start: str = "", every: bool = True) -> None:
        """To the watchers of the event's task (of ``start`` instead, when given), of its
        ancestors, and of every task (unless not ``every``: a cluster's relay, whose every-task
        watchers get the event from cluster_all.py)."""
        task_id = start or ev.task_id
        hops = 0
        while task_id and hops < 16:
            subs = self.subs.get(task_id)
            if subs:
                for s in list(subs):
                    if not s.deliver(ev):
                        self.dropped += 1
                        subs.discard(s)
                        s.close("client too slow: event buffer full; watch again with after_seq")
            task_id = self.parent_of(task_id)
            hops += 1
        if every and self.subs_all:
            for s in list(self.subs_all):
                if not s.deliver(ev):
                    self.dropped += 1
                    self.subs_all.discard(s)
                    s.close("client too slow: event buffer full")

    def finished(self, task_id: str) -> None:
        """The task is finished: its subscribers are told so, its counter forgotten."""
        self.seq.pop(task_id, None)
        self.fresh.pop(task_id, None)
        subs = self.subs.pop(task_id, None)
        if subs:
            for s in subs:
                s.close("task finished")

    def subscribe(self, sub: Subscriber, task_id: str = "") -> None:
        if task_id:
            self.subs.setdefault(task_id, set()).add(sub)
        else:
            self.subs_all.add(sub)

    def unsubscribe(self, sub: Subscriber, task_id: str = "") -> None:
        if task_id:
            s = self.subs.get(task_id)
            if s is not None:
                s.discard(sub)
                if not s:
                    del self.subs[task_id]
        else:
            self.subs_all.discard(sub)

    def replay(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        """The task's events after ``after_seq``, as stored (buffered ones written first; those of
        a fresh task, none of them stored yet, as they are)."""
        mine = self.fresh.get(task_id)
        if mine is not None:
            return [e for e in mine if e.seq > after_seq]
        self.flush()
        return self.store.events(task_id, after_seq)
