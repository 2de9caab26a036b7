"""Token deltas folded in the agent's outbox and in the daemon's inbound frames (issue 17,
orchgpt/wire/token_fold.py), numbered as ranges by the daemon (orchgpt/mesh_fanout.py), relayed
with the range (codec), validated, counted by the events-per-task budget, and followed across
daemons by the first seq of the range (orchgpt/cluster_events.py)."""

from __future__ import annotations

import asyncio

import pytest

from orchgpt.cluster_events import StoreFollowers
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.limits import EventBudget
from orchgpt.mesh_fanout import EventFanout
from orchgpt.models import SEQ_FROM, EventKind, LogEvent, Task, TaskEvent, TokenEvent, first_seq
from orchgpt.store.memory import MemoryStore
from orchgpt.validate import envelope as invalid_envelope
from orchgpt.wire import codec
from orchgpt.wire.coalesce import deltas
from orchgpt.wire.token_fold import MAX_TEXT, TokenOutbox, fold_frame

pytestmark = pytest.mark.timeout(60)


def _tok(text: str, task: str = "t1", sender: str = "a1", n: int = 0) -> pb.Envelope:
    return pb.Envelope(
        id=f"e-{text}",
        sender=sender,
        type=pb.TASK_EVENT,
        task_id=task,
        event=pb.TaskEvent(task_id=task, token=pb.TokenEvent(text=text), deltas=n),
    )


def _log(text: str, task: str = "t1") -> pb.Envelope:
    ev = pb.TaskEvent(task_id=task, log=pb.LogEvent(text=text))
    return pb.Envelope(id="l", sender="a1", type=pb.TASK_EVENT, task_id=task, event=ev)


def _summary(batch: pb.Batch | None) -> list[tuple[str, str, int]]:
    assert batch is not None
    out = []
    for e in batch.envelopes:
        body = e.event.WhichOneof("body") if e.type == pb.TASK_EVENT else pb.MessageType.Name(e.type)
        text = getattr(e.event, body).text if e.type == pb.TASK_EVENT else ""
        out.append((f"{e.event.task_id}:{body}", text, e.event.deltas or 1))
    return out


# ---------------------------------------------------------------- the agent's outbox
def test_outbox_folds_a_tasks_consecutive_deltas_never_across_another_envelope() -> None:
    async def go() -> list[tuple[str, str, int]]:
        ob = TokenOutbox(linger_s=0)
        for i in range(5):
            ob.put_delta("t1", f"a{i} ", lambda i=i: _tok(f"a{i} "))  # type: ignore[misc]
        ob.put(_log("between"))  # a log line: the next delta starts a new envelope
        ob.put_token(_tok("b0 "))
        ob.put_token(_tok("b1 ", n=3))  # an envelope already folded elsewhere: counts 3
        ob.put_token(_tok("c0 ", task="t2"))  # another task
        ob.put_delta("t2", "c1 ", lambda: _tok("c1 ", task="t2"))
        return _summary(await ob.next_batch())

    assert asyncio.run(go()) == [
        ("t1:token", "a0 a1 a2 a3 a4 ", 5),
        ("t1:log", "between", 1),
        ("t1:token", "b0 b1 ", 4),
        ("t2:token", "c0 c1 ", 2),
    ]


def test_outbox_starts_a_new_envelope_once_the_waiting_one_is_sent_or_full() -> None:
    async def go() -> list[list[tuple[str, str, int]]]:
        ob = TokenOutbox(linger_s=0)
        ob.put_delta("t1", "x", lambda: _tok("x"))
        first = _summary(await ob.next_batch())  # sent: never folded into afterwards
        big = "y" * (MAX_TEXT - 1)
        ob.put_delta("t1", big, lambda: _tok(big))
        ob.put_delta("t1", "zz", lambda: _tok("zz"))  # over MAX_TEXT: a new envelope
        return [first, _summary(await ob.next_batch())]

    first, second = asyncio.run(go())
    assert first == [("t1:token", "x", 1)]
    assert [(k, len(t), n) for k, t, n in second] == [("t1:token", MAX_TEXT - 1, 1), ("t1:token", 2, 1)]


def test_linger_a_slow_streams_delta_goes_at_once_a_fast_streams_wait_together() -> None:
    async def go() -> None:
        ob = TokenOutbox(linger_s=30.0)  # long: nothing below may depend on timing
        writer = asyncio.ensure_future(ob.next_batch())
        await asyncio.sleep(0)  # the writer waits, idle
        ob.put_delta("t1", "first ", lambda: _tok("first "))
        assert _summary(await asyncio.wait_for(writer, 5)) == [("t1:token", "first ", 1)]  # no linger
        writer = asyncio.ensure_future(ob.next_batch())
        await asyncio.sleep(0)
        ob.put_delta("t1", "a ", lambda: _tok("a "))
        ob.put_delta("t1", "b ", lambda: _tok("b "))
        await asyncio.sleep(0.05)
        assert not writer.done()  # within a linger of the last frame: the deltas wait ...
        ob.put(_log("now"))  # ... until anything else is put: it wakes the writer, in order
        assert _summary(await asyncio.wait_for(writer, 5)) == [("t1:token", "a b ", 2), ("t1:log", "now", 1)]
        ob.close()

    asyncio.run(go())


def test_linger_ends_with_its_timer_and_close_cancels_it() -> None:
    async def go() -> float:
        ob = TokenOutbox(linger_s=0.2)
        loop = asyncio.get_running_loop()
        writer = asyncio.ensure_future(ob.next_batch())
        await asyncio.sleep(0)
        ob.put_delta("t1", "a", lambda: _tok("a"))  # at once
        await asyncio.wait_for(writer, 5)
        writer = asyncio.ensure_future(ob.next_batch())
        await asyncio.sleep(0)
        t0 = loop.time()
        ob.put_delta("t1", "b", lambda: _tok("b"))
        ob.put_delta("t1", "c", lambda: _tok("c"))
        assert _summary(await asyncio.wait_for(writer, 10)) == [("t1:token", "bc", 2)]
        waited = loop.time() - t0
        writer = asyncio.ensure_future(ob.next_batch())
        await asyncio.sleep(0)
        ob.put_delta("t1", "d", lambda: _tok("d"))
        ob.close()  # the linger's timer is cancelled; what is queued still goes, then the end
        assert _summary(await asyncio.wait_for(writer, 5)) == [("t1:token", "d", 1)]
        assert await asyncio.wait_for(ob.next_batch(), 5) is None
        return waited

    waited = asyncio.run(go())
    assert 0.0 < waited <= 5.0  # woken by the linger's timer (not by a later put)


# ---------------------------------------------------------------- the daemon's inbound frame
def test_fold_frame_folds_runs_of_one_tasks_plain_deltas_only() -> None:
    traced = _tok("tr ")
    traced.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with_data = _tok("d ")
    with_data.event.data["k"] = "v"
    addressed = _tok("to ")
    addressed.recipient.agent_id = "a2"
    frame = [
        _tok("a "),
        _tok("b "),
        _tok("c ", n=2),
        _tok("x ", sender="a2"),  # another sender
        _tok("y ", task="t2"),  # another task
        _tok("z ", task="t2"),
        _log("log"),
        _tok("e "),
        traced,
        with_data,
        addressed,
        _tok("f "),
    ]
    got = _summary(pb.Batch(envelopes=list(fold_frame(frame))))
    assert got == [
        ("t1:token", "a b c ", 4),
        ("t1:token", "x ", 1),
        ("t2:token", "y z ", 2),
        ("t1:log", "log", 1),
        ("t1:token", "e ", 1),
        ("t1:token", "tr ", 1),
        ("t1:token", "d ", 1),
        ("t1:token", "to ", 1),
        ("t1:token", "f ", 1),
    ]
    one = [_tok("a ")]
    assert fold_frame(one) is one
    unfoldable = [_tok("a "), _log("b")]
    assert fold_frame(unfoldable) is unfoldable


# ---------------------------------------------------------------- numbering and relaying
def test_the_daemon_numbers_folded_deltas_as_a_range_and_drops_an_agents_seq_from() -> None:
    fan = EventFanout(MemoryStore(), lambda task_id: "")
    fan.start("t1")
    got: list[TaskEvent] = []

    class Sub:
        def deliver(self, event: TaskEvent) -> bool:
            got.append(event)
            return True

        def close(self, reason: str) -> None: ...

    fan.subscribe(Sub(), "t1")
    fan.publish(TaskEvent("t1", EventKind.STATUS, text="running"))
    fan.publish(TokenEvent("t1", text="abc", deltas=3))
    fan.publish(TokenEvent("t1", text="d", data={SEQ_FROM: "1"}))  # an agent's own claim: dropped
    fan.publish(LogEvent("t1", text="log", data={SEQ_FROM: "1"}))
    assert [(first_seq(e), e.seq) for e in got] == [(1, 1), (2, 4), (5, 5), (6, 6)]
    assert got[1].data == {SEQ_FROM: "2"} and got[2].data == {} and got[3].data == {}


def test_codec_carries_deltas_in_and_the_range_out() -> None:
    m = _tok("abc", n=3).event
    m.data[SEQ_FROM] = "1"  # an agent's, on the wire: not relayed
    ev = codec.event_from_pb(m)
    assert isinstance(ev, TokenEvent) and ev.deltas == 3
    codec.encode_event(ev, m)
    ev.seq, ev.data = 9, {SEQ_FROM: "7"}  # numbered by the fan-out
    out = codec.event_envelope(ev).event
    assert (out.seq, out.data[SEQ_FROM], out.deltas, deltas(out), out.token.text) == (9, "7", 0, 3, "abc")
    single = codec.event_from_pb(_tok("x").event)
    codec.encode_event(single, _tok("x").event)
    single.seq = 10
    out = codec.event_envelope(single).event
    assert SEQ_FROM not in out.data and deltas(out) == 1


def test_deltas_is_validated() -> None:
    bad = _log("x")
    bad.event.deltas = 2
    assert invalid_envelope(bad).startswith("envelope.event.deltas: only a token event folds deltas")
    assert invalid_envelope(_tok("x", n=70_000)).startswith("envelope.event.deltas: 70000 deltas in one event")
    assert invalid_envelope(_tok("x", n=65_536)) == ""


def test_a_folded_event_counts_its_deltas_against_the_events_per_task_budget() -> None:
    budget = EventBudget(10)
    assert [budget.admit("t1", lambda t: True, n) for n in (4, 4, 3, 1)] == ["ok", "ok", "first", "drop"]


async def test_a_follower_on_another_daemon_takes_folded_ranges_in_order() -> None:
    store = MemoryStore()
    store.create_task(Task(task_id="t1", agent_type="echo"))
    spawned: list[asyncio.Task[None]] = []

    async def read(task_id: str, after: int) -> list[TaskEvent]:
        return store.events(task_id, after)

    f = StoreFollowers(store, read, lambda c: spawned.append(asyncio.create_task(c)))
    got: list[tuple[int, int]] = []

    class Sub:
        def deliver(self, event: TaskEvent) -> bool:
            got.append((first_seq(event), event.seq))
            return True

        def close(self, reason: str) -> None: ...

    assert f.follow("t1", Sub(), 0)
    await asyncio.gather(*spawned)

    def ranged(first: int, last: int) -> TaskEvent:
        return TokenEvent("t1", seq=last, text="x" * (last - first + 1), data={SEQ_FROM: str(first)})

    f.live(ranged(5, 9))  # ahead of 1..4: waits
    assert got == []
    store.append_events([TaskEvent("t1", EventKind.STATUS, seq=1), ranged(2, 4)])
    await f.poll("t1")
    f.live(ranged(10, 10))
    assert got == [(1, 1), (2, 4), (5, 9), (10, 10)]  # before: (5, 9) waited for a seq 5 forever
