"""Outbound envelope queues that pack what is ready into one Batch frame.

An idle stream sends a Batch of one as soon as an envelope arrives (no timer,
no added latency). While the writer is busy sending, envelopes accumulate, and
the next frame carries all of them (up to a count and a byte budget). Under
load this turns N frames into one, which is where a Python gRPC router spends
its time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .iac.v1 import iac_pb2 as pb

MAX_BATCH = 512
_DEFAULT_SIZE = 160  # rough size of an envelope without payload


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

    __slots__ = ("_closed", "_items", "_max_bytes", "_waiter", "dropped_reason")

    def __init__(self, max_bytes: int = 2 * 1024 * 1024) -> None:
        self._items: deque[pb.Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._max_bytes = max_bytes
        self.dropped_reason = ""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, env: pb.Envelope) -> bool:
        """Queue an envelope; False when the outbox is closed."""
        if self._closed:
            return False
        self._items.append(env)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    def put_front(self, env: pb.Envelope) -> None:
        self._items.appendleft(env)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self, reason: str = "") -> None:
        """Stop the stream after what is queued has been sent."""
        self._closed = True
        self.dropped_reason = reason
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
            return pb.Batch(envelopes=[items.popleft()])
        out: list[pb.Envelope] = []
        budget = self._max_bytes
        while items and len(out) < MAX_BATCH:
            size = _approx_size(items[0])
            if out and size > budget:
                break
            budget -= size
            out.append(items.popleft())
        return pb.Batch(envelopes=out)

    async def iterate(self):  # type: ignore[no-untyped-def]
        """Async iterator of batches until closed (a gRPC request/response iterator)."""
        while True:
            batch = await self.next_batch()
            if batch is None:
                return
            yield batch
