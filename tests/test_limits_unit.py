"""Unit checks of the limit pieces: the outbox's byte bound, the token bucket, pages, validation."""

from __future__ import annotations

import asyncio

import pytest

from orchgpt import codec, validate
from orchgpt.batching import QUEUED_OVERHEAD, Outbox
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.limits import (
    EventBudget,
    RateLimiter,
    input_too_large,
    page_tasks,
    parse_page_token,
    truncate_text,
)
from orchgpt.wire_guard import Malformed, lenient

pytestmark = pytest.mark.timeout(30)


async def test_outbox_bound_aborts_drops_the_queue_and_sends_the_farewell_last() -> None:
    ob = Outbox(limit_bytes=10 * (QUEUED_OVERHEAD + 200))
    cut: list[bool] = []
    ob.on_overflow = lambda: cut.append(True)
    ob.farewell = lambda code, msg: codec.new_envelope(pb.ERROR, error=pb.Error(code=code, message=msg))
    n = 0
    while ob.put(codec.new_envelope(pb.PONG)):
        n += 1
        assert n < 1000
    assert cut == [True] and ob.closed and ob.error is not None and ob.error[0] == "RESOURCE_EXHAUSTED"
    assert not ob.put(codec.new_envelope(pb.PONG))
    b = await asyncio.wait_for(ob.next_batch(), 1)
    assert b is not None and [e.type for e in b.envelopes] == [pb.ERROR]
    assert "max_stream_queue_bytes" in b.envelopes[0].error.message
    assert await asyncio.wait_for(ob.next_batch(), 1) is None


async def test_outbox_bound_counts_what_was_sent_off() -> None:
    ob = Outbox(limit_bytes=5 * (QUEUED_OVERHEAD + 200))
    for _ in range(100):  # the writer keeps up: never over the bound
        assert ob.put(codec.new_envelope(pb.PONG))
        assert ob.put(codec.new_envelope(pb.PONG))
        await ob.next_batch()
    assert ob.error is None and ob.queued_bytes == 0


def test_token_bucket_refuses_beyond_the_burst_and_flags_abuse() -> None:
    rl = RateLimiter(rate=1.0, burst=10)
    assert all(rl.allow() for _ in range(10))
    assert not rl.allow() and not rl.abusive
    for _ in range(200):
        rl.allow()
    assert rl.abusive
    assert RateLimiter(rate=0, burst=1).allow(10**6)  # 0: no limit


def test_event_budget() -> None:
    b = EventBudget(3)
    verdicts = [b.admit("t", lambda _: True) for _ in range(5)]
    assert verdicts == ["ok", "ok", "ok", "first", "drop"]
    assert EventBudget(0).admit("t", lambda _: True) == "ok"


def test_input_size_and_truncation() -> None:
    assert input_too_large("x" * 10, 10) == ""
    msg = input_too_large("é" * 6, 10)
    assert "command.input is 12 bytes" in msg and "10" in msg and "max_task_input_bytes" in msg
    t = truncate_text("a" * 5000, 100)
    assert t.startswith("a" * 100) and "truncated in this list: 5000 bytes" in t
    assert truncate_text("short", 100) == "short"


def test_pages_stop_by_bytes_and_tokens_round_trip() -> None:
    infos = [pb.TaskInfo(task_id=f"t{i}", input="x" * 3000) for i in range(10)]
    page, token = page_tasks(iter(infos), 0, page_bytes=5000, field_bytes=4096, more=False)
    assert len(page) == 1 and token and parse_page_token(token) == 1
    page, token = page_tasks(iter(infos), 4, page_bytes=10**6, field_bytes=100, more=False)
    assert len(page) == 10 and token == "" and all("truncated" in p.input for p in page)
    assert parse_page_token("") == 0 and parse_page_token("garbage") is None


def test_validation_names_the_field() -> None:
    assert "envelope.type" in validate.envelope(pb.Envelope(type=99))
    assert "envelope.event.status.state" in validate.envelope(
        pb.Envelope(type=pb.TASK_EVENT, event=pb.TaskEvent(status=pb.StatusEvent(state=42)))
    )
    assert "envelope.task_id" in validate.envelope(pb.Envelope(type=pb.PING, task_id="a\x00"))
    assert "envelope.heartbeat.state" in validate.envelope(
        pb.Envelope(type=pb.HEARTBEAT, heartbeat=pb.Heartbeat(state=9))
    )
    assert validate.envelope(codec.new_envelope(pb.PING, "a")) == ""
    assert "path" in validate.request("FetchArtifact", pb.FetchArtifactRequest(task_id="t", path="x\x00"))


def test_lenient_decoding_never_raises() -> None:
    de = lenient(pb.Batch.FromString)
    bad = de(b"\x0a\x05ab")
    assert isinstance(bad, Malformed) and "malformed Batch" in bad.detail and bad.envelopes == ()
    assert isinstance(de(b""), pb.Batch)
