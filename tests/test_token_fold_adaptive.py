"""The agent's adaptive token linger (issue 17, session 4; orchgpt/wire/token_fold.py): a
backed-up link lingers longest, a frame taken after a busy write starts a linger, a fast stream
stays fast through a short gap of its agent, and a sustained fast stream's linger grows. The
clock of the outbox is a fake one (token_fold's ``time``): nothing here depends on timing."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import pytest

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.wire import token_fold
from orchgpt.wire.token_fold import TokenOutbox

pytestmark = pytest.mark.timeout(60)


def _tok(text: str, task: str = "t1") -> pb.Envelope:
    ev = pb.TaskEvent(task_id=task, token=pb.TokenEvent(text=text))
    return pb.Envelope(id=f"e-{text}", sender="a1", type=pb.TASK_EVENT, task_id=task, event=ev)


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(token_fold, "time", SimpleNamespace(monotonic=c))
    return c


def _texts(batch: pb.Batch | None) -> list[str]:
    assert batch is not None
    return [e.event.token.text for e in batch.envelopes]


def _delta(ob: TokenOutbox, text: str) -> None:
    ob.put_delta("t1", text, lambda: _tok(text))


async def test_a_backed_up_link_lingers_longest_and_its_next_frame_starts_a_linger(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # seconds of the fake clock: deltas 1 s apart are a fast stream's, the lingers are 30 s and
    # 60 s (the loop's real timers never fire here)
    monkeypatch.setattr(token_fold, "FAST_GAP_S", 100.0)
    monkeypatch.setattr(token_fold, "_GAP_CLAMP_S", 400.0, raising=False)
    ob = TokenOutbox(linger_s=30.0, linger_max_s=60.0)
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    _delta(ob, "a")  # the first delta: at once
    assert _texts(await asyncio.wait_for(writer, 5)) == ["a"]
    # the writer is busy sending "a": the next deltas wait for it (the link is backed up) ...
    clock.t += 1
    _delta(ob, "b")
    clock.t += 1
    _delta(ob, "c")
    assert _texts(await asyncio.wait_for(ob.next_batch(), 5)) == ["bc"]  # ... and go at once after it
    assert ob.current == 60.0  # backed up: the longest linger
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    clock.t += 38  # 40 s after "a"'s frame (past a 30 s linger), 38 s after "bc"'s
    _delta(ob, "d")
    await asyncio.sleep(0)
    assert not writer.done()  # "bc"'s frame started a 60 s linger: "d" waits (before: it went at once)
    ob.close()
    assert _texts(await asyncio.wait_for(writer, 5)) == ["d"]


async def test_a_fast_stream_stays_fast_through_a_short_gap(clock: _Clock) -> None:
    ob = TokenOutbox(linger_s=30.0)
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    _delta(ob, "first")
    assert _texts(await asyncio.wait_for(writer, 5)) == ["first"]
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    for i in range(20):  # a fast stream: 0.1 ms apart, lingering ...
        clock.t += 0.0001
        _delta(ob, f"{i},")
    log = pb.Envelope(id="l", sender="a1", type=pb.TASK_EVENT, event=pb.TaskEvent(task_id="t1", log=pb.LogEvent()))
    ob.put(log)  # ... until a log line wakes the writer
    assert len((await asyncio.wait_for(writer, 5) or pb.Batch()).envelopes) == 2
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    clock.t += 0.010  # then its agent was busy for 10 ms (more than FAST_GAP_S)
    _delta(ob, "late")
    await asyncio.sleep(0)
    assert not writer.done()  # still a fast stream's delta: it lingers (before: a frame of its own)
    ob.close()
    assert _texts(await asyncio.wait_for(writer, 5)) == ["late"]


async def test_a_paused_stream_is_slow_again_and_its_linger_short_again(clock: _Clock) -> None:
    ob = TokenOutbox(linger_s=30.0, linger_max_s=60.0)
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    _delta(ob, "0")
    assert _texts(await asyncio.wait_for(writer, 5)) == ["0"]  # the first: at once
    ob.current = 60.0  # as after a backed-up frame
    writer = asyncio.ensure_future(ob.next_batch())
    await asyncio.sleep(0)
    for i in (1, 2):  # fast: they wait
        clock.t += 0.0001
        _delta(ob, f"{i}")
    await asyncio.sleep(0)
    assert not writer.done()
    clock.t += 0.5  # a pause (longer than 4 x FAST_GAP_S): the next delta is a slow stream's
    _delta(ob, "x")
    assert ob.current == 30.0
    ob.close()
    assert _texts(await asyncio.wait_for(writer, 5)) == ["12x"]


def test_a_sustained_fast_streams_linger_grows_to_its_bound_with_each_lingered_frame(clock: _Clock) -> None:
    async def go() -> list[float]:
        ob = TokenOutbox(linger_s=0.02, linger_max_s=0.035)  # the loop's real timers end the lingers
        seen = [ob.current]
        writer = asyncio.ensure_future(ob.next_batch())
        await asyncio.sleep(0)
        _delta(ob, "a")
        await asyncio.wait_for(writer, 5)
        for i in range(4):
            writer = asyncio.ensure_future(ob.next_batch())
            await asyncio.sleep(0)
            for part in "bc":  # 1 ms apart on the outbox's clock: a fast stream's, they wait for the timer
                clock.t += 0.001
                _delta(ob, f"{part}{i}")
            assert _texts(await asyncio.wait_for(writer, 5)) == [f"b{i}c{i}"]
            seen.append(ob.current)
        ob.close()
        return seen

    seen = asyncio.run(go())
    assert seen[0] == 0.02 and seen[-1] == 0.035
    assert all(b > a for a, b in itertools.pairwise(seen[:3]))
