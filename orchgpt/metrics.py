"""Prometheus metrics of the daemon (`orchgpt serve --metrics-listen HOST:PORT`; docs/operations.md).

Built on the mesh's public sides only: a Subscriber to every event (it only counts, so it never
overflows) and the query side read at scrape time (a custom collector). Everything runs on the
daemon's event loop, the HTTP endpoint included, so nothing reads the mesh from another thread.
Plain HTTP without authentication: the metrics carry no secrets (no task inputs, no ids), only
counts by agent type, state, model and event kind. Label values are bounded: agent types and
models past a cap are counted as "other".
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from . import logs
from .metrics_more import MoreMetrics
from .models import AgentState, EventKind, TaskEvent, TaskState
from .tls import format_address, parse_address

log = logs.get("orchgpt.metrics")

MAX_AGENT_TYPES = 100  # distinct agent_type label values; more are "other"
MAX_MODELS = 50  # distinct model label values; more are "other"
MAX_TRACKED = 100_000  # unfinished tasks whose timestamps are kept (oldest forgotten first)
OTHER = "other"
# seconds: from a fraction of a second (echo) to an hour (a team run)
BUCKETS = (
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
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
LIVE_STATES = (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING)
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: +Inf
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, v)] += 1
        self.sum += v

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*[repr(b) for b in BUCKETS], "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class _Capped:
    """Label values as given, the first ``cap`` distinct ones; every later one is "other"."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.cap:
            return OTHER
        self.seen.add(value)
        return value


class MeshMetrics:
    """Counts the mesh's events (a Subscriber of every task) and reads its state when scraped."""

    def __init__(self, mesh: Any, spawner: Any = None) -> None:
        self.mesh = mesh
        self.spawner = spawner
        self.agent_type = _Capped(MAX_AGENT_TYPES)
        self.model = _Capped(MAX_MODELS)
        self.tasks: dict[tuple[str, str], int] = {}  # (agent_type, state) -> count
        self.events: dict[str, int] = {}  # kind -> count
        self.queue_s: dict[str, _Histogram] = {}
        self.run_s: dict[str, _Histogram] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}  # (agent_type, model, kind)
        self.cost: dict[tuple[str, str], float] = {}
        self.calls: dict[tuple[str, str], int] = {}
        # unfinished task -> [agent_type, queued since (monotonic) or None, assigned at or None]
        self.live: dict[str, list[Any]] = {}
        self.registry = CollectorRegistry(auto_describe=False)  # our own, not the global one
        self.registry.register(self)

    # ---- Subscriber
    def deliver(self, ev: TaskEvent) -> bool:
        try:
            self._count(ev)
        except Exception as exc:  # metrics never break the mesh
            log.exception("metrics_error", error=str(exc))
        return True  # only counts: never too slow

    def close(self, reason: str) -> None:
        pass

    def _count(self, ev: TaskEvent) -> None:
        kind = str(ev.kind)
        self.events[kind] = self.events.get(kind, 0) + 1
        if ev.kind == EventKind.STATUS:
            now = time.monotonic()
            if ev.state == TaskState.QUEUED:
                t = self.live.get(ev.task_id)
                if t is None:  # the first QUEUED: a task is submitted (or recovered and requeued)
                    at = self.agent_type(self.mesh.agent_type_of(ev.task_id) or ev.agent_type or "unknown")
                    if ev.data.get("requeued") != "true":
                        self._inc(self.tasks, (at, "submitted"))
                    if len(self.live) >= MAX_TRACKED:
                        self.live.pop(next(iter(self.live)))
                    self.live[ev.task_id] = [at, now, None]
                elif t[1] is None:  # requeued: waits again
                    t[1], t[2] = now, None
            elif ev.state == TaskState.ASSIGNED:
                t = self.live.get(ev.task_id)
                if t is not None:
                    if t[1] is not None:
                        self.queue_s.setdefault(t[0], _Histogram()).observe(now - t[1])
                    t[1], t[2] = None, now
        elif ev.kind == EventKind.RESULT:
            now = time.monotonic()
            t = self.live.pop(ev.task_id, None)
            r = ev.result
            at = (
                t[0]
                if t is not None
                else self.agent_type((r.agent_type if r is not None else "") or ev.agent_type or "unknown")
            )
            state = str(ev.state or (r.state if r is not None else "unknown"))
            self._inc(self.tasks, (at, state))
            if t is not None and t[2] is not None:
                self.run_s.setdefault(at, _Histogram()).observe(now - t[2])
            if r is not None:
                u = r.usage
                if u.prompt_tokens or u.completion_tokens or u.calls or u.cost_usd:
                    model = self.model(u.model or "unknown")
                    self._inc(self.tokens, (at, model, "input"), u.prompt_tokens)
                    self._inc(self.tokens, (at, model, "output"), u.completion_tokens)
                    self._inc(self.calls, (at, model), u.calls)
                    self.cost[(at, model)] = self.cost.get((at, model), 0.0) + u.cost_usd

    @staticmethod
    def _inc(d: dict[Any, int], key: Any, n: int = 1) -> None:
        d[key] = d.get(key, 0) + n

    # ---- collector (prometheus_client calls it at scrape time)
    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "orchgpt_tasks",
            "Tasks submitted (state=submitted) and finished (by final state), by agent type",
            labels=["agent_type", "state"],
        )
        for (at, st), n in sorted(self.tasks.items()):
            c.add_metric([at, st], n)
        yield c
        g = GaugeMetricFamily("orchgpt_tasks_in_state", "Unfinished tasks by state now", labels=["state"])
        now: dict[str, int] = {str(s): 0 for s in LIVE_STATES}
        for t in list(self.mesh.active.values()):
            if str(t.state) in now:
                now[str(t.state)] += 1
        for st, n in now.items():
            g.add_metric([st], n)
        yield g
        for name, doc, hists in (
            (
                "orchgpt_task_queue_seconds",
                "Seconds a task waited for an agent (each wait: a requeued task waits again), by agent type",
                self.queue_s,
            ),
            (
                "orchgpt_task_run_seconds",
                "Seconds from a task's (last) assignment to its result, by agent type",
                self.run_s,
            ),
        ):
            h = HistogramMetricFamily(name, doc, labels=["agent_type"])
            for at, hist in sorted(hists.items()):
                h.add_metric([at], hist.buckets(), hist.sum)
            yield h
        a = GaugeMetricFamily("orchgpt_agents", "Connected agents by type and state", labels=["agent_type", "state"])
        agents: dict[tuple[str, str], int] = {}
        slots: dict[tuple[str, str], int] = {}  # (agent type, total|running) -> slots
        for info in self.mesh.list_agents():
            at = self.agent_type(info.agent_type)
            self._inc(agents, (at, str(info.state)))
            if info.state != AgentState.LOST:
                slots[(at, "total")] = slots.get((at, "total"), 0) + info.max_concurrent_tasks
                slots[(at, "running")] = slots.get((at, "running"), 0) + len(info.running_tasks)
        for (at, st), n in sorted(agents.items()):
            a.add_metric([at, st], n)
        yield a
        s = GaugeMetricFamily(
            "orchgpt_agent_slots",
            "Tasks the connected agents may run at once (total) and run now",
            labels=["agent_type", "kind"],
        )
        for (at, kind), n in sorted(slots.items()):
            s.add_metric([at, kind], n)
        yield s
        tok = CounterMetricFamily(
            "orchgpt_llm_tokens",
            "Model tokens used by finished tasks (kind=input|output), by agent type and model",
            labels=["agent_type", "model", "kind"],
        )
        for key, n in sorted(self.tokens.items()):
            tok.add_metric(list(key), n)
        yield tok
        cost = CounterMetricFamily(
            "orchgpt_llm_cost_usd",
            "Model cost in US dollars of finished tasks, by agent type and model",
            labels=["agent_type", "model"],
        )
        for pair, v in sorted(self.cost.items()):
            cost.add_metric(list(pair), v)
        yield cost
        calls = CounterMetricFamily(
            "orchgpt_llm_calls",
            "Model calls of finished tasks, by agent type and model",
            labels=["agent_type", "model"],
        )
        for pair, n in sorted(self.calls.items()):
            calls.add_metric(list(pair), n)
        yield calls
        ev = CounterMetricFamily("orchgpt_events", "Task events published by the mesh, by kind", labels=["kind"])
        for k in EventKind:
            ev.add_metric([str(k)], self.events.get(str(k), 0))
        yield ev
        counts = getattr(self.spawner, "counts", None) or {}
        for what, doc in (("start", "starts"), ("crash", "crashes"), ("give_up", "give_ups")):
            lc = CounterMetricFamily(
                f"orchgpt_local_agent_{doc}",
                f"Local agents (spawned by this daemon): {doc.replace('_', '-')}, by agent type",
                labels=["agent_type"],
            )
            by_type: dict[str, int] = {}
            for (at, w), n in list(counts.items()):
                if w == what:
                    self._inc(by_type, self.agent_type(at), n)
            for at, n in sorted(by_type.items()):
                lc.add_metric([at], n)
            yield lc
        stats = getattr(self.mesh, "stats", {})
        rq = CounterMetricFamily(
            "orchgpt_tasks_requeued", "Times a task went back to its queue (its agent was lost or crashed)"
        )
        rq.add_metric([], stats.get("requeued", 0))
        yield rq


class MetricsServer:
    """GET /metrics over plain HTTP on the daemon's event loop."""

    def __init__(self, metrics: MeshMetrics, listen: str) -> None:
        self.metrics = metrics
        self.listen = listen
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.host = ""

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    async def start(self) -> None:
        host, port = parse_address(self.listen)
        self.host = host
        try:
            self.server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.listen} (metrics_listen): {exc.strerror or exc}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("metrics_serving", address=self.address, path="/metrics")
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "metrics_not_loopback",
                address=self.address,
                hint="the metrics endpoint has no TLS and no authentication",
            )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            method = parts[0] if parts else b""
            path = (parts[1] if len(parts) > 1 else b"").split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path in (b"/metrics", b"/"):
                status, ctype = "200 OK", CONTENT_TYPE_LATEST
                body = generate_latest(self.metrics.registry)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found: try /metrics\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                f"{len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except Exception as exc:  # one bad scrape never takes the daemon down
            log.warning("metrics_request_error", error=str(exc))
        finally:
            writer.close()


def _type_name(t: int) -> str:
    from .servicer_base import _TYPE_NAMES  # the wire's names of the message types

    names: dict[int, str] = {int(k): v for k, v in _TYPE_NAMES.items()}
    return names.get(t, "UNKNOWN")


async def start_metrics(server: Any) -> MetricsServer | None:
    """Start the metrics endpoint of an OrchgptServer (``settings.metrics_listen``), or None."""
    listen = server.settings.metrics_listen
    if not listen:
        return None
    metrics = MeshMetrics(server.mesh, server.spawner)
    server.mesh.subscribe(metrics)  # every event
    more = MoreMetrics(server.mesh, _type_name, metrics.agent_type)  # metrics_more.py
    more.time_store(server.mesh.store)
    metrics.registry.register(more)
    ms = MetricsServer(metrics, listen)
    await ms.start()
    return ms
