"""More of the daemon's metrics (docs/operations.md): envelopes on the agents' streams by type,
events dropped for slow watchers, store latency by operation, and the counters the agents report
in their heartbeats. Registered with MeshMetrics' own registry by ``start_metrics``.

The envelope counters are plain module-level lists the agent streams bump (one list item
increment per envelope, always on: they cost less than reading the envelope's type); the store
is timed only while the metrics endpoint is on (its methods are wrapped on the instance).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from . import logs

log = logs.get("orchgpt.metrics")

MAX_AGENTS = 10_000  # agents whose last report is kept
# envelopes by MessageType number, on every agent's Connect stream (slot 0: unknown numbers)
ENVELOPES_IN = [0] * 64
ENVELOPES_OUT = [0] * 64

STORE_OPS = (
    "create_task",
    "save_task",
    "get_task",
    "list_tasks",
    "children",
    "unfinished_tasks",
    "append_events",
    "events",
    "last_seq",
    "record_messages",
    "messages",
    "agent_seen",
    "list_sessions",
    "get_session",
    "publish_session",
)
STORE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# what an agent reports in its HEARTBEAT (Heartbeat fields 10-14): name -> help
AGENT_COUNTERS = {
    "llm_calls": "Model requests the agents made (as they report them), by agent type",
    "llm_input_tokens": "Model input tokens the agents used (as they report them), by agent type",
    "llm_output_tokens": "Model output tokens the agents used (as they report them), by agent type",
    "tool_calls": "Tool calls the agents ran (as they report them), by agent type",
    "tool_errors": "Tool calls that failed (as the agents report them), by agent type",
}


def count_in(t: int) -> None:
    ENVELOPES_IN[t if 0 <= t < 64 else 0] += 1


def count_out(envelopes: Any) -> None:
    out = ENVELOPES_OUT
    for env in envelopes:
        t = env.type
        out[t if 0 <= t < 64 else 0] += 1


class _Hist:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(STORE_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        import bisect

        self.counts[bisect.bisect_left(STORE_BUCKETS, v)] += 1
        self.sum += v

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*[repr(b) for b in STORE_BUCKETS], "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class AgentReports:
    """The cumulative counters each agent reports; the daemon's totals grow by their increases
    (an agent that restarts reports from 0 again: its new values count whole)."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, ...]] = {}  # agent id -> its last report
        self.totals: dict[tuple[str, str], int] = {}  # (agent_type, counter) -> total

    def report(self, agent_id: str, agent_type: str, values: tuple[int, ...]) -> None:
        before = self.last.pop(agent_id, None)
        if before is None and len(self.last) >= MAX_AGENTS:
            self.last.pop(next(iter(self.last)))  # the longest silent one
        self.last[agent_id] = values
        for i, name in enumerate(AGENT_COUNTERS):
            v = max(values[i], 0)
            old = before[i] if before is not None else 0
            inc = v - old if v >= old else v
            if inc:
                key = (agent_type, name)
                self.totals[key] = self.totals.get(key, 0) + inc


REPORTS = AgentReports()


class MoreMetrics:
    """Collector of the families above (on MeshMetrics' registry)."""

    def __init__(self, mesh: Any, type_names: Callable[[int], str], capped: Callable[[str], str]) -> None:
        self.mesh = mesh
        self.type_names = type_names
        self.capped = capped
        self.store: dict[str, _Hist] = {}

    def time_store(self, store: Any) -> None:
        """Time every operation of ``store`` (this instance only) from now on."""
        for op in STORE_OPS:
            fn = getattr(store, op, None)
            if callable(fn):
                setattr(store, op, self._timed(op, fn))

    def _timed(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        hist = self.store.setdefault(op, _Hist())

        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                hist.observe(time.perf_counter() - t0)

        return timed

    def collect(self) -> Iterator[Metric]:
        for name, direction, counts in (
            ("in", "from agents", ENVELOPES_IN),
            ("out", "to agents", ENVELOPES_OUT),
        ):
            c = CounterMetricFamily(
                f"orchgpt_envelopes_{name}",
                f"Envelopes {direction} on their Connect streams, by message type",
                labels=["type"],
            )
            for t, count in enumerate(counts):
                if count:
                    c.add_metric([self.type_names(t)], count)
            yield c
        dropped = CounterMetricFamily(
            "orchgpt_events_dropped",
            "Events a watcher did not get "
            "because its buffer was full (the slow watcher is cut off; "
            "it watches again from its last seq)",
        )
        dropped.add_metric([], getattr(getattr(self.mesh, "fanout", None), "dropped", 0))
        yield dropped
        h = HistogramMetricFamily(
            "orchgpt_store_seconds",
            "Seconds each store operation took (SQLite or PostgreSQL), by operation",
            labels=["operation"],
        )
        for op, hist in sorted(self.store.items()):
            if any(hist.counts):
                h.add_metric([op], hist.buckets(), hist.sum)
        yield h
        by: dict[tuple[str, str], int] = {}
        for (at, n), v in list(REPORTS.totals.items()):
            key = (self.capped(at), n)
            by[key] = by.get(key, 0) + v
        for name, doc in AGENT_COUNTERS.items():
            c = CounterMetricFamily(f"orchgpt_agent_{name}", doc, labels=["agent_type"])
            for (at, n), v in sorted(by.items()):
                if n == name:
                    c.add_metric([at], v)
            yield c
