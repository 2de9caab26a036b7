"""Outbox: no added latency when idle, many envelopes per frame when busy."""

from __future__ import annotations

import asyncio

from orchgpt import codec
from orchgpt.batching import MAX_BATCH, Outbox
from orchgpt.iac.v1 import iac_pb2 as pb


def env(i: int, payload: bytes = b"") -> pb.Envelope:
    return codec.new_envelope(pb.COMMAND, "a", correlation_id=str(i), payload=payload)


async def test_an_idle_outbox_sends_a_single_envelope_at_once() -> None:
    ob = Outbox()
    waiter = asyncio.create_task(ob.next_batch())
    await asyncio.sleep(0)
    assert not waiter.done()
    ob.put(env(1))
    batch = await asyncio.wait_for(waiter, 1)
    assert batch is not None and [e.correlation_id for e in batch.envelopes] == ["1"]


async def test_a_busy_outbox_packs_what_is_ready_into_one_frame_in_order() -> None:
    ob = Outbox()
    for i in range(10):
        ob.put(env(i))
    batch = await ob.next_batch()
    assert batch is not None and [e.correlation_id for e in batch.envelopes] == [str(i) for i in range(10)]
    for i in range(MAX_BATCH + 5):
        ob.put(env(i))
    first, second = await ob.next_batch(), await ob.next_batch()
    assert first is not None and second is not None
    assert len(first.envelopes) == MAX_BATCH and len(second.envelopes) == 5


async def test_the_byte_budget_splits_large_payloads() -> None:
    ob = Outbox(max_bytes=10_000)
    for i in range(4):
        ob.put(env(i, b"x" * 4000))
    sizes = []
    while len(ob):
        b = await ob.next_batch()
        assert b is not None
        sizes.append(len(b.envelopes))
    assert sizes == [2, 2]
    assert all(b.ByteSize() < 10_000 for b in [pb.Batch(envelopes=[env(0, b"x" * 4000)] * 2)])


async def test_close_ends_the_stream_after_what_is_queued() -> None:
    ob = Outbox()
    ob.put(env(1))
    ob.close("done")
    assert not ob.put(env(2))
    batches = [b async for b in ob.iterate()]
    assert len(batches) == 1 and ob.dropped_reason == "done"


async def test_an_idle_outbox_holds_no_queue_and_every_put_starts_one() -> None:
    """An empty Outbox keeps no deque (memory per idle agent, issue 17); put, put_live and
    put_front each start one, and taking everything gives it up again."""
    from orchgpt.iac.v1 import iac_pb2 as pb
    from orchgpt.wire.batching import Outbox

    for put in ("put", "put_live", "put_front"):
        ob = Outbox()
        assert len(ob) == 0 and not ob._items
        getattr(ob, put)(pb.Envelope(id="x"))
        batch = await ob.next_batch()
        assert batch is not None and [e.id for e in batch.envelopes] == ["x"], put
        assert ob._items == () and len(ob) == 0
