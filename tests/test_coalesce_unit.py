"""orchgpt.wire.coalesce through EventSubscription and a real Outbox (no network): token
deltas fold only into their own task's envelope still waiting, never across an event of
another kind, never into one already taken, and never past MAX_TEXT."""

from __future__ import annotations

import pytest

from orchgpt.models import EventKind, TaskEvent
from orchgpt.servicer_clients import EventSubscription
from orchgpt.wire import coalesce
from orchgpt.wire.batching import Outbox

pytestmark = pytest.mark.timeout(30)


def _ev(task: str, seq: int, text: str, kind: EventKind = EventKind.TOKEN) -> TaskEvent:
    return TaskEvent(task, kind, seq=seq, text=text)


def _summary(outbox: Outbox) -> list[tuple[str, str, int, str]]:
    out = []
    for env in list(outbox._items):
        ev = env.event
        body = ev.WhichOneof("body")
        text = ev.token.text if body == "token" else ev.log.text
        out.append((ev.task_id, text, ev.seq, ev.data.get(coalesce.SEQ_FROM, "")))
    return out


async def test_deltas_fold_per_task_and_not_across_other_events() -> None:
    outbox = Outbox(limit_bytes=1 << 20)
    sub = EventSubscription(outbox, 100)
    for e in (
        _ev("a", 1, "x"),
        _ev("b", 1, "p"),
        _ev("a", 2, "y"),
        _ev("b", 2, "q"),
        _ev("a", 3, "log", EventKind.LOG),
        _ev("a", 4, "z"),
        _ev("a", 5, "w"),
    ):
        assert sub.deliver(e)
    assert _summary(outbox) == [
        ("a", "xy", 2, "1"),
        ("b", "pq", 2, "1"),
        ("a", "log", 3, ""),
        ("a", "zw", 5, "4"),
    ]
    batch = await outbox.next_batch()
    assert batch is not None and len(batch.envelopes) == 4
    assert [coalesce.deltas(e.event) for e in batch.envelopes] == [2, 2, 1, 2]
    sub.deliver(_ev("a", 6, "v"))  # what was taken is never changed: a new envelope
    assert _summary(outbox) == [("a", "v", 6, "")]
    assert batch.envelopes[3].event.token.text == "zw"


def test_a_folded_envelope_stops_growing_at_max_text() -> None:
    outbox = Outbox()
    sub = EventSubscription(outbox, 100)
    chunk = "x" * 1000
    n = coalesce.MAX_TEXT // 1000 + 5
    for i in range(n):
        sub.deliver(_ev("a", i + 1, chunk))
    sizes = [len(t) for _, t, _, _ in _summary(outbox)]
    assert len(sizes) == 2 and max(sizes) <= coalesce.MAX_TEXT and sum(sizes) == n * 1000


def test_growth_counts_against_the_outbox_bound() -> None:
    outbox = Outbox(limit_bytes=64 * 1024)
    sub = EventSubscription(outbox, 10_000)
    for i in range(200):
        sub.deliver(_ev("a", i + 1, "y" * 1000))  # 200 KB of text for a stream that never reads
    assert outbox.error is not None and outbox.error[0] == "RESOURCE_EXHAUSTED"
    assert "not reading" in outbox.error[1]
