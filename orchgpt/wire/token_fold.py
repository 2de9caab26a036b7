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
- an idle stream's writer is woken for token deltas at most once per ``linger`` (``LINGER_S``,
  20 ms; ``ORCHGPT_TOKEN_LINGER_MS`` sets it, 0: off): the first delta after a quiet ``linger``
  goes at once (a slow stream gains no delay), the next ones wait until ``linger`` after that
  wake-up and go together in one frame. Anything else put meanwhile (a log line, the REPLY, a
  PING) wakes the writer at once, and the waiting deltas go first, in order. While the writer
  is busy sending, nothing lingers: what is queued goes with its next frame, as for any
  envelope.

orchgpt numbers a folded event's deltas ``data["seq_from"]``..``seq`` (orchgpt.mesh_fanout), so a
watcher still counts every delta (orchgpt.wire.coalesce.deltas). The linger adds at most
``linger`` to a delta's delay, and only while the agent streams faster than one delta per
``linger``. At 50,000 deltas/s from 64 agents it turns about 32,000 frames/s into at most 3,200
(20 ms) and leaves the p99 delay under the 50 ms a watcher is promised (issue 17,
bench/tokens.py); 10 ms and 5 ms were measured too (bench/RESULTS-issue17.md, "Tokens,
session 3"): the daemon's CPU per delta follows the frame rate.

Why fold in the agent and not only in the daemon: only the sender can make fewer frames, and
the inbound frame is the largest single cost on the daemon when many agents stream slowly
(bench/RESULTS-issue17.md, "Tokens, session 3"). The daemon folds what arrives together too
(``fold_frame``): agents that do not fold (written to docs/protocol.md alone) get the cheaper
per-event path for the deltas they send in one frame.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from ..iac.v1 import iac_pb2 as pb
from ..validate import MAX_DELTAS
from .batching import Outbox

__all__ = ["LINGER_S", "MAX_DELTAS", "MAX_TEXT", "TokenOutbox", "fold_frame"]

# at most one frame of token deltas per this long while an agent streams fast (agentd; 0: no linger)
LINGER_S = float(os.environ.get("ORCHGPT_TOKEN_LINGER_MS", "20") or 0) / 1000
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

    __slots__ = ("_last", "_quiet_until", "_timer", "linger")

    def __init__(self, max_bytes: int = 2 * 1024 * 1024, limit_bytes: int = 0, linger_s: float = LINGER_S) -> None:
        super().__init__(max_bytes, limit_bytes)
        self.linger = linger_s
        self._last: pb.Envelope | None = None  # the token envelope put last (maybe still queued)
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_until = 0.0  # (loop time) till then, an idle writer is woken for tokens by the timer only

    def put_token(self, env: pb.Envelope) -> bool:
        """Queue a TASK_EVENT token envelope (the outbox owns it from now on: a later delta may
        be folded into it); False when the outbox is closed."""
        if not _foldable(env):
            return self.put(env)
        last = self._last
        if last is not None and self._items and self._items[-1] is last and _fold(last, env):
            return self.grow(len(env.event.token.text))
        return self._linger(env)

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
            return self.grow(len(text))
        return self.put_token(build())

    def _linger(self, env: pb.Envelope) -> bool:
        self._last = env
        if self.linger <= 0 or self._waiter is None:
            return self.put(env)  # the writer is busy: this goes with its next frame anyway
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._quiet_until:  # the first delta after a quiet linger goes at once
            self._quiet_until = now + self.linger
            return self.put(env)
        waiter, self._waiter = self._waiter, None  # queued without waking the idle writer ...
        try:
            ok = self.put(env)
        finally:
            self._waiter = waiter
        if ok and self._timer is None:  # ... until a linger after the last wake-up
            self._timer = loop.call_at(self._quiet_until, self._wake)
        return ok

    def _wake(self) -> None:
        self._timer = None
        self._quiet_until = asyncio.get_running_loop().time() + self.linger
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

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
