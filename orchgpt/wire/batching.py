"""Outbound envelope queues that pack what is ready into one Batch frame.

An idle stream sends a Batch of one as soon as an envelope arrives (no timer,
no added latency). While the writer is busy sending, envelopes accumulate, and
the next frame carries all of them (up to a count and a byte budget). Under
load this turns N frames into one, which is where a Python gRPC router spends
its time.

Nothing leaves before the commit that holds what it acknowledges: an envelope queued while a
group-commit window is open (orchgpt/durable.py) is sent only once that window is committed;
when the commit fails, the outbox is aborted with UNAVAILABLE and nothing more is sent. An
envelope that acknowledges nothing (``put_live``: a token delta for a watcher, whose row is
written with a later flush anyway) does not wait for a window of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import durable
from ..iac.v1 import iac_pb2 as pb

MAX_BATCH = 512
_DEFAULT_SIZE = 160  # rough size of an envelope without payload
# What one queued envelope costs in memory beyond its payload (a Python protobuf object and
# the deque slot), counted against an outbox's byte bound so that a flood of small envelopes
# (PONGs to a peer that never reads) is bounded too.
QUEUED_OVERHEAD = 1024
# An empty outbox holds no deque (~0.75 KiB each, one per connected agent: issue 17): this
# shared empty tuple stands for it until something is put, and again once all is taken.
_EMPTY: Any = ()


def _approx_size(env: pb.Envelope) -> int:
    body = env.WhichOneof("body")
    if body == "payload":
        return _DEFAULT_SIZE + len(env.payload)
    if body == "file_chunk":
        return _DEFAULT_SIZE + len(env.file_chunk.data)
    if body == "event":
        ev = env.event
        if ev.WhichOneof("body") == "token":  # the hot path: no size computation
            return _DEFAULT_SIZE + len(ev.token.text)
        return _DEFAULT_SIZE + ev.ByteSize()
    return _DEFAULT_SIZE


class Outbox:
    """A FIFO of envelopes for one stream; ``next_batch`` is awaited by the writer."""

    __slots__ = (
        "_closed",
        "_gate",
        "_items",
        "_limit",
        "_max_bytes",
        "_queued",
        "_waiter",
        "added",
        "dropped_reason",
        "error",
        "farewell",
        "on_overflow",
        "taken",
    )

    def __init__(self, max_bytes: int = 2 * 1024 * 1024, limit_bytes: int = 0) -> None:
        self._items: deque[pb.Envelope] = _EMPTY
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._gate: asyncio.Future[Any] | None = None  # the commit the queued envelopes wait for
        self._max_bytes = max_bytes
        self.dropped_reason = ""
        # The bound on what may wait here (0: none). Past it the outbox is aborted with
        # RESOURCE_EXHAUSTED: what was queued is dropped and ``on_overflow`` is called (the
        # stream's owner cuts the peer). ``error`` is (status code name, message) once aborted.
        self._limit = limit_bytes
        self._queued = 0
        self.error: tuple[str, str] | None = None
        self.on_overflow: Callable[[], None] | None = None
        # the last envelope a peer gets when the outbox is aborted (an agent's ERROR), from (code, message)
        self.farewell: Callable[[str, str], pb.Envelope] | None = None
        # envelopes put (at the back) and taken so far: the one put as number ``added`` is still
        # queued while ``taken < added`` (wire.coalesce folds token deltas into such envelopes)
        self.added = 0
        self.taken = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_bytes(self) -> int:
        return self._queued

    @property
    def waiting(self) -> bool:
        """True while the stream's writer waits in ``next_batch`` (False while it writes)."""
        return self._waiter is not None

    def bound(self, limit_bytes: int) -> None:
        """Set the bound on queued bytes (0: none)."""
        self._limit = limit_bytes

    def _admit(self, env: pb.Envelope) -> bool:
        if not self._limit:
            return True
        return self.grow(_approx_size(env) + QUEUED_OVERHEAD)

    def grow(self, nbytes: int) -> bool:
        """Count ``nbytes`` more as queued (an envelope still queued has grown); False when
        that overflows the bound (the outbox is then aborted)."""
        if not self._limit:
            return True
        self._queued += nbytes
        if self._queued <= self._limit:
            return True
        code = "RESOURCE_EXHAUSTED"
        msg = (
            f"the peer is not reading: more than {self._limit} bytes queued for it "
            "(max_stream_queue_bytes); disconnected"
        )
        self.abort(code, msg, last=self.farewell(code, msg) if self.farewell is not None else None)
        cb = self.on_overflow
        if cb is not None:
            cb()
        return False

    def abort(self, code: str, message: str, last: pb.Envelope | None = None) -> None:
        """Drop what is queued, send only ``last`` (if any), and close with an error."""
        if self.error is not None:
            return
        self._items = deque([last]) if last is not None else _EMPTY
        self._queued = 0
        self.error = (code, message)
        self.close(message)

    def put(self, env: pb.Envelope, live: bool = False) -> bool:
        """Queue an envelope; False when the outbox is closed (or has just overflowed). It leaves
        after the commit of the group-commit window open now, unless ``live`` (``put_live``)."""
        if self._closed or not self._admit(env):
            return False
        if self._items is _EMPTY:
            self._items = deque()
        self._items.append(env)
        self.added += 1
        if durable._open and not live:
            self._gate = durable.barrier()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    def put_live(self, env: pb.Envelope) -> bool:
        """``put`` for an envelope that acknowledges nothing (a token delta relayed to a watcher:
        issue 17): it does not wait for the group-commit window open now. It still goes after
        whatever was queued before it, and with the commit that one waits for."""
        return self.put(env, live=True)

    def put_front(self, env: pb.Envelope) -> None:
        if not self._admit(env):
            return
        if self._items is _EMPTY:
            self._items = deque()
        self._items.appendleft(env)
        if durable._open:
            self._gate = durable.barrier()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self, reason: str = "") -> None:
        """Stop the stream after what is queued has been sent."""
        if self.error is None or not self._closed:
            self.dropped_reason = reason
        self._closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next_batch(self) -> pb.Batch | None:
        """Wait for at least one envelope; return all that are ready, or None when closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        if len(items) == 1:
            env = items[0]
            self._items = _EMPTY
            self.taken += 1
            if self._limit:
                self._queued = 0
            return await self._committed([env]) if self._gate is not None else pb.Batch(envelopes=[env])
        out: list[pb.Envelope] = []
        budget = self._max_bytes
        sent = 0
        while items and len(out) < MAX_BATCH:
            size = _approx_size(items[0])
            if out and size > budget:
                break
            budget -= size
            sent += size + QUEUED_OVERHEAD
            out.append(items.popleft())
        if not items:
            self._items = _EMPTY
        self.taken += len(out)
        if self._limit:
            self._queued = max(0, self._queued - sent) if items else 0
        return await self._committed(out) if self._gate is not None else pb.Batch(envelopes=out)

    async def _committed(self, out: list[pb.Envelope]) -> pb.Batch | None:
        """``out`` once the commit the queued envelopes wait for is done; None (the outbox
        aborted) when it failed."""
        gate = self._gate
        assert gate is not None
        if not self._items or gate.done():  # what is still queued waits for a later gate, if any
            self._gate = None
        try:
            await durable.settle(gate)
        except Exception as exc:  # the store's error: nothing of this is acknowledged
            self.abort("UNAVAILABLE", f"not acknowledged: the store could not commit: {exc}")
            self._items = _EMPTY
            return None
        return pb.Batch(envelopes=out)

    async def iterate(self) -> AsyncIterator[pb.Batch]:
        """Async iterator of batches until closed (a gRPC request/response iterator)."""
        while True:
            batch = await self.next_batch()
            if batch is None:
                return
            yield batch
