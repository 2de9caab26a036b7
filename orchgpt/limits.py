"""Limits per peer: what one agent or client may cost the daemon.

Each limit is a setting (orchgpt/config.py, `orchgpt serve --help`, docs/security-limits.md):

- ``max_stream_queue_bytes``: bytes queued for one stream (batching.Outbox's bound); a peer
  that does not read is cut with RESOURCE_EXHAUSTED (``StreamCutter``).
- ``agent_messages_per_second`` / ``agent_message_burst``: envelopes per second per agent
  (``RateLimiter``); beyond it an envelope is answered ERROR RESOURCE_EXHAUSTED and dropped,
  and an agent that keeps on is disconnected.
- ``max_events_per_task``: events stored and delivered per task (``EventBudget``); beyond it the
  task's further events are dropped, with one marker event and one ERROR to the agent.
- ``max_task_input_bytes``: ``command.input`` of Submit and DELEGATE_TASK (``input_too_large``).
- ``list_page_bytes``: bytes of one ListTasks page (``page_tasks``); long fields are truncated in
  list views with a marker, and the page stops early (next_page_token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import logs
from .models import EventKind, TaskEvent

log = logs.get("orchgpt.limits")


@dataclass(frozen=True)
class PeerLimits:
    """The limits in force, from the settings (defaults here match config.Settings)."""

    max_stream_queue_bytes: int = 16 * 1024 * 1024
    agent_messages_per_second: float = 5000.0
    agent_message_burst: int = 10000
    max_events_per_task: int = 5000
    max_task_input_bytes: int = 3 * 1024 * 1024
    list_page_bytes: int = 1024 * 1024
    list_field_bytes: int = 4096

    @classmethod
    def from_settings(cls, s: Any) -> PeerLimits:
        return cls(**{k: getattr(s, k) for k in cls.__dataclass_fields__ if hasattr(s, k)})


# ---------------------------------------------------------------- streams
class StreamCutter:
    """Cuts a stream whose peer stopped reading once its outbox overflows.

    The handler's write is blocked by flow control then, so closing the outbox is not
    enough: the handler task is cancelled while it is away from its outbox, i.e. writing
    (a handler waiting for its outbox is woken by the close instead).
    """

    __slots__ = ("__weakref__", "_outbox", "_task", "cut", "on_revoked")

    def __init__(self, outbox: Any) -> None:
        self._task = asyncio.current_task()
        self._outbox = outbox
        self.cut = False
        self.on_revoked: Callable[[], None] | None = None  # revocation.Revocations calls it

    def __call__(self) -> None:
        self.cut = True
        if not self._outbox.waiting and self._task is not None and not self._task.done():
            self._task.cancel()


# ---------------------------------------------------------------- messages per second
class RateLimiter:
    """A token bucket: ``rate`` envelopes per second, bursts up to ``burst``.

    ``abusive`` turns true when more than ten bursts' worth of envelopes were refused within
    ``window`` seconds: the peer keeps on after being told, and is disconnected.
    """

    __slots__ = ("_last", "_refused", "_refused_since", "burst", "rate", "tokens", "window")

    def __init__(self, rate: float, burst: int, window: float = 5.0) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self._last = time.monotonic()
        self._refused = 0
        self._refused_since = self._last
        self.window = window

    def allow(self, n: int = 1) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        if now - self._refused_since > self.window:
            self._refused, self._refused_since = 0, now
        self._refused += n
        return False

    @property
    def abusive(self) -> bool:
        return self._refused > 10 * self.burst


# ---------------------------------------------------------------- events per task
class EventBudget:
    """Counts the events each running task has sent; ``admit`` says whether one more may pass.

    The first refusal returns "first" so that the caller tells the agent and records a
    marker once; later ones return "drop".
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def admit(self, task_id: str, active: Callable[[str], bool], deltas: int = 1) -> str:
        """'ok', 'first' (the first event over the limit) or 'drop'. A token event that folds
        ``deltas`` deltas counts as that many events (as the agent had sent them one by one)."""
        if self.limit <= 0:
            return "ok"
        before = self._counts.get(task_id, 0)
        n = before + deltas
        self._counts[task_id] = n
        if len(self._counts) > 4096:  # forget finished tasks now and then
            for k in [k for k in self._counts if not active(k)]:
                del self._counts[k]
        if n <= self.limit:
            return "ok"
        return "first" if before <= self.limit else "drop"


def dropped_events_marker(task_id: str, message: str) -> TaskEvent:
    """The one LOG event that says a task's further events are dropped."""
    return TaskEvent(task_id, EventKind.LOG, text=message, data={"events_dropped": "true"})


# ---------------------------------------------------------------- input size
def input_too_large(text: str, limit: int, field: str = "command.input") -> str:
    """'' when ``text`` fits; else the INVALID_ARGUMENT detail naming the field and the limit."""
    if limit <= 0 or len(text) * 4 <= limit:  # cheap test first: at most 4 bytes per character
        return ""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return ""
    return (
        f"{field} is {size} bytes; the limit is {limit} bytes (max_task_input_bytes): "
        "send large material as files or artifacts"
    )


# ---------------------------------------------------------------- list pages
TRUNCATED_MARK = "\n…[truncated in this list: {n} bytes in all; GetTask returns the whole text]"


def truncate_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return text
    return text[:limit] + TRUNCATED_MARK.format(n=size)


def page_token(offset: int) -> str:
    return f"o{offset}" if offset > 0 else ""


def parse_page_token(token: str) -> int | None:
    """The offset of a token this module made; None when it is not one."""
    if not token:
        return 0
    if token[0] != "o" or not token[1:].isdigit() or len(token) > 12:
        return None
    return int(token[1:])


def page_tasks(
    infos: Iterable[Any], offset: int, page_bytes: int, field_bytes: int, more: bool
) -> tuple[list[Any], str]:
    """Truncate the long fields of TaskInfo messages and cut the page at ``page_bytes``.

    ``infos`` are the tasks of one page from ``offset`` on; ``more`` says whether the store
    holds tasks after them. Returns (the page, next_page_token). A page always holds
    at least one task.
    """
    out: list[Any] = []
    total = 0
    for info in infos:
        info.input = truncate_text(info.input, field_bytes)
        info.error = truncate_text(info.error, field_bytes)
        if info.HasField("result"):
            r = info.result
            r.output = truncate_text(r.output, field_bytes)
            r.error = truncate_text(r.error, field_bytes)
            for k, v in list(r.data.items()):
                r.data[k] = truncate_text(v, field_bytes)
        size = info.ByteSize() + 8
        if out and total + size > page_bytes:
            return out, page_token(offset + len(out))
        out.append(info)
        total += size
    return out, (page_token(offset + len(out)) if more else "")
