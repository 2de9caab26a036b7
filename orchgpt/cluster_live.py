"""Events sent live to the other daemons of a cluster (issue 19, docs/scaling.md "Events").

The daemon running a task that is watched elsewhere (a task it claimed from another daemon's
offer or took over, or one a follower asked for with ``NOTIFY orchgpt_follow``) sends each of
its events, numbered, as the payload of a ``NOTIFY orchgpt_events`` at once, without waiting
for the batch that stores it: one statement per burst (everything queued while the previous
one was on the wire, and for ``WINDOW`` after the first, up to ``BURST``) on a connection of
its own (nothing else waits before it), its commit not waiting for the disk
(``synchronous_commit`` off: a notification is not durable anyway). The events of one task
in a burst are folded into as few payloads as fit the limit (``{"t": TASK, "e": [[seq, kind,
ts, body], ...]}``, in seq order): one notification for the server's queue and for every
listening daemon to read, however many token deltas it carries. The follower
(cluster_events.py) delivers them at once; the stored rows (each committed batch NOTIFYed
as ``TASK_ID SEQ``, from here too) fill any gap (an event over the
payload limit, a dropped burst) and end the follow with the RESULT, which is never sent live: a
watcher's stream ends only when every event is stored. Sequence numbers keep the order and
drop a duplicate: each watcher gets seq ``last + 1`` and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg

from . import logs
from .models import EventKind, TaskEvent
from .store.sqlite_rows import _event_payload
from .wire.dicts import event_from_dict

log = logs.get("orchgpt.cluster")

MAX_PAYLOAD = 7900  # PostgreSQL's NOTIFY payload limit is 8000 bytes
MAX_QUEUED = 10_000  # events and notices waiting for the wire; beyond, the store carries them
MAX_STREAMED = 10_000  # tasks streamed at once
BURST = 2000  # events and notices taken for one statement
WINDOW = 0.001  # seconds a burst gathers after its first event (folded into fewer payloads)
_SEND = "SELECT pg_notify('orchgpt_events', x) FROM unnest(%s::text[]) AS x"


def encode(ev: TaskEvent) -> str:
    """The event as a fragment of a folded payload: ``[seq,"kind",ts,BODY]``, its body the
    JSON the store keeps, embedded as it is (not as a string: no second escaping, one parse on
    the other side); '' when it cannot fit a payload (the store carries it)."""
    text = f'[{ev.seq},"{ev.kind}",{ev.ts_ms},{_event_payload(ev)}]'
    return text if size(text) + len(ev.task_id) * 6 + 16 <= MAX_PAYLOAD else ""


def size(text: str) -> int:
    """Its length in UTF-8 bytes (the limit is in bytes)."""
    return len(text) if text.isascii() else len(text.encode())


def fold(items: list[tuple[str, str] | str]) -> list[str]:
    """The payloads of a burst: each task's events (``(task_id, fragment)``, in seq order)
    folded into payloads of at most MAX_PAYLOAD bytes, each payload where its task's first
    event of it was; a batch notice (str) where it was (after the events it names)."""
    out: list[str | list[str]] = []
    room: dict[str, tuple[list[str], int]] = {}  # each task's last open payload: fragments, bytes
    for it in items:
        if isinstance(it, str):
            out.append(it)
            continue
        task_id, frag = it
        frags, used = room.get(task_id, ([], MAX_PAYLOAD))
        n = size(frag) + 1
        if used + n > MAX_PAYLOAD:
            frags, used = [json.dumps(task_id)], 14 + len(json.dumps(task_id))
            out.append(frags)
        frags.append(frag)
        room[task_id] = (frags, used + n)
    return [x if isinstance(x, str) else f'{{"t":{x[0]},"e":[{",".join(x[1:])}]}}' for x in out]


def task_of(payload: str) -> str:
    """The task id of a live event's payload, cheaply (before decoding it); '' if not one."""
    head = '{"t":"'
    return payload[len(head) :].split('"', 1)[0] if payload.startswith(head) else ""


def decode(payload: str) -> list[TaskEvent]:
    """The live events of a payload, in order; none for anything else (a batch's notice, garbage)."""
    if not payload.startswith("{"):
        return []
    try:
        d = json.loads(payload)
        task_id = str(d["t"])
        return [
            event_from_dict({**p, "task_id": task_id, "seq": int(s), "kind": k, "ts_ms": int(ts)})
            for s, k, ts, p in d["e"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("cluster_bad_live_event", error=str(exc), payload=payload[:200])
        return []


class LiveSender:
    """The publishing side: which tasks are streamed, and the queue of payloads to send."""

    def __init__(self, url: str, holds: Callable[[str], bool]) -> None:
        self.url = url
        self._conn: Any = None
        self.holds = holds  # the daemon still holds this task (tasks that moved away are forgotten)
        self.streamed: set[str] = set()
        self.queue: list[tuple[str, str] | str] = []  # (task_id, event fragment) or a batch notice
        self._wake = asyncio.Event()
        self.dropped = 0  # payloads left to the store (queue full, or a failed send)
        self.every_until = 0.0  # another daemon watches every task: all tasks' events until then (cluster_all.py)

    def backend_pid(self) -> int:
        """The server process of the live connection (its notifications carry it); 0 if none."""
        return int(self._conn.info.backend_pid) if self._conn is not None and not self._conn.closed else 0

    def want(self, task_id: str) -> None:
        """Stream this task's events from now on (until its RESULT)."""
        if len(self.streamed) >= MAX_STREAMED:
            self.streamed = {t for t in self.streamed if self.holds(t)}
        if len(self.streamed) < MAX_STREAMED:
            self.streamed.add(task_id)

    def publish(self, ev: TaskEvent) -> None:
        """Called for every event this daemon publishes (mesh_fanout.EventFanout.live)."""
        every = ev.kind != EventKind.TOKEN and self.every_until and self.every_until > time.monotonic()
        if ev.task_id not in self.streamed and not every:
            return
        if ev.kind == EventKind.RESULT:
            self.streamed.discard(ev.task_id)
            if not every:  # (the followers end with the stored RESULT; the every-task watchers with this)
                return
        payload = encode(ev)
        if not payload:
            return
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.queue.append((ev.task_id, payload))
        self._wake.set()

    def stored(self, last: dict[str, int]) -> None:
        """A batch of events committed (store/postgres.py): ``NOTIFY orchgpt_events`` with
        ``TASK_ID SEQ`` (its last event) for each task, in the next burst. Sent here rather
        than in the batch's transaction, whose durable commit would hold PostgreSQL's NOTIFY
        lock through its fsync, and every live event behind it."""
        if len(self.queue) + len(last) > MAX_QUEUED:
            self.dropped += len(last)  # the followers' tick polls instead
            return
        self.queue.extend(f"{task_id} {seq}" for task_id, seq in sorted(last.items()))
        self._wake.set()

    async def run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            await asyncio.sleep(WINDOW)  # the deltas of the next millisecond go with it
            self._wake.clear()
            taken, self.queue = self.queue[:BURST], self.queue[BURST:]
            if self.queue:
                self._wake.set()
            if not taken:
                continue
            batch = fold(taken)
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=2,
                        application_name="orchgpt-live",
                        options="-c synchronous_commit=off",  # it writes nothing durable
                    )
                await self._conn.execute(_SEND, (batch,))
                delay = 0.1
            except psycopg.Error as exc:  # the stored rows fill the gap
                self.dropped += len(taken)
                log.warning("cluster_live_send_failed", error=(str(exc).splitlines() or [""])[0], events=len(taken))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
