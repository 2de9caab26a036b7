"""Token deltas folded on their way out of an agent: fewer, larger TASK_EVENTs for the same deltas.

An agent streaming a model's tokens sends one TOKEN event per delta. On the daemon, what costs
is the number of frames and events, not their size: paced at a few hundred deltas a second, an
agent that sends each delta as it comes sends a frame per delta (or per 2 ms tick), and the
daemon's router pays its read, decode, numbering, fan-out and store row for each.

``TokenOutbox`` is agentd's stream outbox (orchgpt.wire.batching.Outbox) with two more ways in,
``put_delta`` (a delta's text: agentd's ``Link.emit``) and ``put_token`` (a token envelope):

- a token delta whose task's previous token envelope is still the last one waiting in the
  outbox is appended to it: the texts are concatenated and ``TaskEvent.deltas`` counts them
  (at most ``MAX_TEXT`` characters and ``MAX_DELTAS`` deltas per envelope; never across an
  envelope of another kind, so the order of everything the agent sends holds);
- a fast stream's writer is woken for token deltas at most once per linger. A delta that comes
  more than ``FAST_GAP_S`` (5 ms) after the previous one in a stream whose deltas come on average
  (a moving average of the gaps) more than ``FAST_GAP_S`` apart, or a linger after the last frame,
  goes at once: a stream slower than 200 deltas/s (a model's usual pace) gains no delay at all,
  and a fast stream whose agent was busy for a few milliseconds stays fast (its deltas came in a
  burst after a gap: session 4 found that one gap alone sent a frame each time). The
  next deltas of a fast stream wait until a linger after that and go together in one frame.
  Anything else put meanwhile (a log line, the REPLY, a PING) wakes the writer at once, and
  the waiting deltas go first, in order. While the writer is busy sending, nothing lingers:
  what is queued goes with its next frame, as for any envelope; that frame starts a linger too.
- the linger adapts (issue 17, session 4): it starts at ``linger`` (``LINGER_S``, 20 ms;
  ``ORCHGPT_TOKEN_LINGER_MS``, 0: off) and grows by a quarter with each frame a fast stream
  lingered for, up to ``linger_max`` (``LINGER_MAX_S``, 30 ms; ``ORCHGPT_TOKEN_LINGER_MAX_MS``);
  it is ``linger_max`` at once when the link is backed up (deltas waited while the writer spent
  more than ``BACKED_UP_S``, 5 ms, sending the previous frame: the transport or the agent's loop
  is behind) and back at ``linger`` when the stream pauses (a delta ``4 × FAST_GAP_S`` after the
  previous one). A stream's first frames go soon; a sustained fast
  stream, the load on the daemon, sends about a frame per ``linger_max``; no delta waits in
  the outbox longer than ``linger_max`` for its frame to start.

orchgpt numbers a folded event's deltas ``data["seq_from"]``..``seq`` (orchgpt.mesh_fanout), so a
watcher still counts every delta (orchgpt.wire.coalesce.deltas). The linger adds at most
``linger_max`` to a delta's delay, and only while the agent streams faster than one delta per
``FAST_GAP_S``. At 50,000 deltas/s from 64 agents it turns about 32,000 frames/s into about 3,200
(20 ms) or 2,130 (30 ms) and leaves the p99 delay under the 50 ms a watcher is promised (issue 17,
bench/tokens.py); 10 ms and 5 ms were measured too (bench/RESULTS-issue17.md, "Tokens,
session 3" and "Paced tokens, session 4"): the daemon's CPU per delta follows the frame rate.

Why fold in the agent and not only in the daemon: only the sender can make fewer frames, and
the inbound frame is the largest single cost on the daemon when many agents stream slowly
(bench/RESULTS-issue17.md, "Tokens, session 3"). The daemon folds what arrives together too
(``fold_frame``): agents that do not fold (written to docs/protocol.md alone) get the cheaper
per-event path for the deltas they send in one frame.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

from ..iac.v1 import iac_pb2 as pb
from ..validate import MAX_DELTAS
from .batching import Outbox

__all__ = ["LINGER_MAX_S", "LINGER_S", "MAX_DELTAS", "MAX_TEXT", "TokenOutbox", "fold_frame"]

# at most one frame of token deltas per this long while an agent streams fast (agentd; 0: no linger) ...
LINGER_S = float(os.environ.get("ORCHGPT_TOKEN_LINGER_MS", "20") or 0) / 1000
# ... growing up to this while it keeps streaming fast, or at once when its link is backed up
LINGER_MAX_S = float(os.environ.get("ORCHGPT_TOKEN_LINGER_MAX_MS", "30") or 0) / 1000
LINGER_GROWTH = 1.25  # the linger's growth per lingered frame of a sustained fast stream
FAST_GAP_S = 0.005  # a delta this soon after the previous one (or on average) is a fast stream's: it may linger
BACKED_UP_S = 0.005  # a frame's write this long, with deltas waiting for it: the link is backed up
_GAP_CLAMP_S = 4 * FAST_GAP_S  # a longer gap counts as this in the average (a pause is forgotten quickly)
MAX_TEXT = 4096  # characters of folded deltas in one envelope (small frames go out steadily)


def _foldable(env: pb.Envelope) -> bool:
    """A plain token delta: a TASK_EVENT with a token body and nothing a fold would lose."""
    ev = env.event
    return (
        env.type == pb.TASK_EVENT
        and ev.WhichOneof("body") == "token"
        and not ev.data
        and not env.traceparent
        and not env.HasField("recipient")
    )


class TokenOutbox(Outbox):
    """An agent's outbox that folds its token deltas and lets them linger briefly when idle."""

    __slots__ = (
        "_backed_up",
        "_gap_avg",
        "_last",
        "_last_at",
        "_quiet_until",
        "_sent_at",
        "_timer",
        "current",
        "linger",
        "linger_max",
    )

    def __init__(
        self,
        max_bytes: int = 2 * 1024 * 1024,
        limit_bytes: int = 0,
        linger_s: float = LINGER_S,
        linger_max_s: float | None = None,
    ) -> None:
        super().__init__(max_bytes, limit_bytes)
        self.linger = linger_s
        # the adaptive linger's bound (default: LINGER_MAX_S, never below ``linger``) and its value now
        self.linger_max = max(linger_s, LINGER_MAX_S if linger_max_s is None else linger_max_s)
        self.current = linger_s
        self._backed_up = False  # token deltas were put while the writer was sending ...
        self._sent_at = 0.0  # ... the frame it took then (monotonic)
        self._last: pb.Envelope | None = None  # the token envelope put last (maybe still queued)
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_until = 0.0  # (monotonic) till then, a fast stream's idle writer is woken by the timer only
        self._last_at = 0.0  # (monotonic) when the last token delta was put
        self._gap_avg = _GAP_CLAMP_S  # the moving average of the gaps between token deltas

    def put_token(self, env: pb.Envelope) -> bool:
        """Queue a TASK_EVENT token envelope (the outbox owns it from now on: a later delta may
        be folded into it); False when the outbox is closed."""
        if not _foldable(env):
            return self.put(env)
        last = self._last
        now = time.monotonic()
        fast = self._pace(now)
        if last is not None and self._items and self._items[-1] is last and _fold(last, env):
            return self.grow(len(env.event.token.text))
        return self._linger(env, now, fast)

    def put_delta(self, task_id: str, text: str, build: Callable[[], pb.Envelope]) -> bool:
        """A token delta of ``task_id``: appended to that task's token envelope while it is the
        last one waiting, else ``build()`` (its plain TOKEN envelope) is queued as ``put_token``
        does. The cheap way in: most deltas of a fast stream never become an envelope."""
        last = self._last
        if (
            last is not None
            and self._items
            and self._items[-1] is last
            and last.event.task_id == task_id
            and _append(last.event, text, 1)
        ):
            self._pace(time.monotonic())
            return self.grow(len(text))
        return self.put_token(build())

    def _pace(self, now: float) -> bool:
        """A token delta is put at ``now``: True when the stream is fast (this delta came, or its
        deltas come on average, less than ``FAST_GAP_S`` apart)."""
        gap = now - self._last_at
        self._last_at = now
        avg = self._gap_avg + ((gap if gap < _GAP_CLAMP_S else _GAP_CLAMP_S) - self._gap_avg) * 0.25
        self._gap_avg = avg
        if gap < FAST_GAP_S or avg < FAST_GAP_S:
            return True
        self.current = self.linger  # the stream paused (or is slow): the next linger is short again
        return False

    def _linger(self, env: pb.Envelope, now: float, fast: bool) -> bool:
        self._last = env
        if self.linger <= 0:
            return self.put(env)
        if self._waiter is None:  # the writer is busy: this goes with its next frame anyway
            self._backed_up = fast
            return self.put(env)
        if not fast or now >= self._quiet_until:  # a slow stream's delta, or a linger since the last frame
            self._quiet_until = now + self.current
            return self.put(env)
        waiter, self._waiter = self._waiter, None  # queued without waking the idle writer ...
        try:
            ok = self.put(env)
        finally:
            self._waiter = waiter
        if ok and self._timer is None:  # ... until a linger after the last wake-up
            self._timer = asyncio.get_running_loop().call_later(self._quiet_until - now, self._wake)
        return ok

    def _wake(self) -> None:
        self._timer = None
        self.current = min(self.linger_max, self.current * LINGER_GROWTH)  # a sustained fast stream
        self._quiet_until = time.monotonic() + self.current
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next_batch(self) -> pb.Batch | None:
        backed_up = self._backed_up and time.monotonic() - self._sent_at > BACKED_UP_S
        self._backed_up = False
        batch = await super().next_batch()
        if self._last is not None and self.linger > 0:
            now = self._sent_at = time.monotonic()
            if backed_up:  # deltas waited for a slow write of the previous frame: the longest linger
                self.current = self.linger_max
            # the frame taken now starts a linger too (after a busy write, not only after a wake-up)
            if now + self.current > self._quiet_until:
                self._quiet_until = now + self.current
        return batch

    def close(self, reason: str = "") -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().close(reason)


def _append(m: pb.TaskEvent, text: str, n: int) -> bool:
    """``n`` more deltas (``text``) at the end of the token event ``m``; False when full."""
    total = (m.deltas or 1) + n
    if total > MAX_DELTAS or len(m.token.text) + len(text) > MAX_TEXT:
        return False
    m.token.text += text
    m.deltas = total
    return True


def _fold(into: pb.Envelope, env: pb.Envelope) -> bool:
    """Append ``env``'s token delta(s) to ``into`` (both plain token envelopes); False when they
    do not go together (another task, or ``into`` is full)."""
    new = env.event
    if into.event.task_id != new.task_id or into.task_id != env.task_id:
        return False
    return _append(into.event, new.token.text, new.deltas or 1)


def fold_frame(envs: Sequence[pb.Envelope]) -> Sequence[pb.Envelope]:
    """The daemon's side: a frame's envelopes with each run of consecutive plain token deltas of
    one task and sender folded into its first envelope (``TaskEvent.deltas`` counting them).
    ``envs`` itself when there is nothing to fold (the common case of one envelope)."""
    if len(envs) < 2:
        return envs
    if envs[0].type != pb.TASK_EVENT and envs[-1].type != pb.TASK_EVENT:
        return envs  # not an event stream's frame (COMMANDs, REPLYs): not worth a look at each
    out: list[pb.Envelope] = []
    last: pb.Envelope | None = None
    folded = False
    for env in envs:
        if _foldable(env):
            if last is not None and env.sender == last.sender and _fold(last, env):
                folded = True
                continue
            last = env
        else:
            last = None
        out.append(env)
    return out if folded else envs
