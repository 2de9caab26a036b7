"""The daemon's spans of each task's life, made from the mesh's events (docs/operations.md).

A Subscriber of every task, installed only when tracing is on. For each task:

    orchgpt.task {type}            QUEUED (first) .. RESULT; parent: the submitter's span
      orchgpt.queue {type}         each wait for an agent (a requeued task waits again)
      orchgpt.run {type}           each assignment .. its result or requeue; the agent's
        orchgpt.dispatch {type}      spans are its children (the RUN envelope's traceparent)
      orchgpt.store_result {type}  the result settled and written to the store

The first QUEUED is published inside ``Mesh.submit``, synchronously, so the task span's parent
is whatever span is current there: the ``orchgpt.submit`` span of a client's Submit (whose
parent came in the gRPC metadata) or the agent's span that a DELEGATE_TASK envelope named.
Everything runs on the daemon's event loop; the number of tasks followed is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import logs, tracing
from .models import EventKind, TaskEvent, TaskState

log = logs.get("orchgpt.tracing")

MAX_TRACKED = 100_000  # unfinished tasks followed; past it the oldest one's spans are ended
_FAILED = frozenset({TaskState.FAILED, TaskState.CANCELLED})


@dataclass
class _Spans:
    agent_type: str
    task: Any
    phase: Any = None  # the queue or the run span open now
    running: bool = False


class TaskSpans:
    """Subscriber: opens and closes the spans of each task as its events go by."""

    def __init__(self, mesh: Any) -> None:
        self.mesh = mesh
        self.live: dict[str, _Spans] = {}

    # ---- Subscriber
    def deliver(self, ev: TaskEvent) -> bool:
        try:
            self._on(ev)
        except Exception as exc:  # tracing never breaks the mesh
            log.warning("tracing_error", error=str(exc), task_id=ev.task_id)
        return True

    def close(self, reason: str) -> None:
        for s in self.live.values():
            self._end_phase(s, reason)
            s.task.end()
        self.live.clear()

    # ---- the RUN envelope's trace context
    def run_carrier(self, task_id: str) -> tuple[str, str]:
        """(traceparent, tracestate) for the RUN of ``task_id``: its run span, via a short
        dispatch span (the send itself)."""
        from opentelemetry import trace

        s = self.live.get(task_id)
        if s is None or s.phase is None or not s.running:
            return "", ""
        ctx = trace.set_span_in_context(s.phase)
        t = tracing.tracer()
        with t.start_as_current_span(
            f"orchgpt.dispatch {s.agent_type}",
            context=ctx,
            kind=trace.SpanKind.PRODUCER,
            attributes={"orchgpt.task.id": task_id},
        ):
            return tracing.current_carrier(ctx)

    # ---- internals
    def _on(self, ev: TaskEvent) -> None:
        if ev.kind == EventKind.STATUS:
            if ev.state == TaskState.QUEUED:
                s = self.live.get(ev.task_id)
                if s is None:
                    self._start(ev)
                elif s.running:  # requeued: its run ended without a result; it waits again
                    self._end_phase(s, ev.text or "requeued")
                    self._phase(ev.task_id, s, "queue")
                # else: a note on what it waits for (orchgpt/waiting.py); still the same wait
            elif ev.state == TaskState.ASSIGNED:
                s = self.live.get(ev.task_id)
                if s is not None:
                    self._end_phase(s)
                    self._phase(ev.task_id, s, "run", agent_id=ev.agent_id)
        elif ev.kind == EventKind.RESULT:
            s = self.live.pop(ev.task_id, None)
            if s is not None:
                self._finish(ev, s)

    def _start(self, ev: TaskEvent) -> None:
        from opentelemetry import trace

        if len(self.live) >= MAX_TRACKED:
            old = self.live.pop(next(iter(self.live)))
            self._end_phase(old, "no longer followed")
            old.task.end()
        t = self.mesh.active.get(ev.task_id)
        agent_type = (t.agent_type if t is not None else "") or ev.agent_type or "unknown"
        attrs: dict[str, Any] = {"orchgpt.task.id": ev.task_id, "orchgpt.agent.type": agent_type}
        if t is not None:
            attrs["gen_ai.conversation.id"] = t.session_id
            attrs["orchgpt.task.action"] = str(t.action)
            if t.parent_task_id:
                attrs["orchgpt.task.parent_id"] = t.parent_task_id
        span = tracing.tracer().start_span(
            f"orchgpt.task {agent_type}", kind=trace.SpanKind.SERVER, attributes=attrs
        )  # parent: the current span
        s = _Spans(agent_type, span)
        self.live[ev.task_id] = s
        self._phase(ev.task_id, s, "queue")

    def _phase(self, task_id: str, s: _Spans, what: str, agent_id: str = "") -> None:
        from opentelemetry import trace

        attrs: dict[str, Any] = {"orchgpt.task.id": task_id}
        if agent_id:
            attrs["orchgpt.agent.id"] = agent_id
        kind = trace.SpanKind.CLIENT if what == "run" else trace.SpanKind.INTERNAL
        s.phase = tracing.tracer().start_span(
            f"orchgpt.{what} {s.agent_type}",
            kind=kind,
            context=trace.set_span_in_context(s.task),
            attributes=attrs,
        )
        s.running = what == "run"

    @staticmethod
    def _end_phase(s: _Spans, error: str = "") -> None:
        if s.phase is None:
            return
        if error:
            from opentelemetry.trace import Status, StatusCode

            s.phase.set_status(Status(StatusCode.ERROR, error[:200]))
        s.phase.end()
        s.phase, s.running = None, False

    def _finish(self, ev: TaskEvent, s: _Spans) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        state = ev.state or (ev.result.state if ev.result is not None else None)
        failed = state in _FAILED
        why = (ev.result.error if ev.result is not None else "") or str(state)
        self._end_phase(s, why if failed else "")
        task = s.task
        task.set_attribute("orchgpt.task.state", str(state))
        r = ev.result
        if r is not None and (r.usage.prompt_tokens or r.usage.completion_tokens):
            task.set_attribute("gen_ai.usage.input_tokens", r.usage.prompt_tokens)
            task.set_attribute("gen_ai.usage.output_tokens", r.usage.completion_tokens)
        if failed:
            task.set_status(Status(StatusCode.ERROR, why[:200]))
            task.set_attribute("error.type", str(state))
        # the result is written right after it is published (Mesh._finish): this span ends
        # at the loop's next turn, after that write
        store = tracing.tracer().start_span(
            f"orchgpt.store_result {s.agent_type}",
            context=trace.set_span_in_context(task),
            attributes={"orchgpt.task.id": ev.task_id},
        )

        def end() -> None:
            store.end()
            task.end()

        try:
            asyncio.get_running_loop().call_soon(end)
        except RuntimeError:
            end()


_spans: TaskSpans | None = None


def install(mesh: Any) -> TaskSpans | None:
    """Follow every task of ``mesh`` (when tracing is on)."""
    global _spans
    if not tracing.ENABLED:
        return None
    _spans = TaskSpans(mesh)
    mesh.subscribe(_spans)
    return _spans


def uninstall(mesh: Any) -> None:
    global _spans
    s, _spans = _spans, None
    if s is not None:
        mesh.unsubscribe(s)
        s.close("daemon stopping")


def handle_in_task(handle: Callable[..., None], agent_id: str, env: Any, outbox: Any) -> None:
    """``handle(agent_id, env, outbox)`` with the span of ``env``'s task current (its run, else
    the task's own), so that what the daemon logs meanwhile carries that trace's ids."""
    from opentelemetry import trace

    s = _spans.live.get(env.task_id) if _spans is not None and env.task_id else None
    if s is None:
        handle(agent_id, env, outbox)
        return
    with trace.use_span(s.phase or s.task, end_on_exit=False):
        handle(agent_id, env, outbox)


def run_carrier(task_id: str) -> tuple[str, str]:
    """The trace context to put on the RUN envelope of ``task_id`` (empty when off)."""
    s = _spans
    if s is None:
        return "", ""
    try:
        return s.run_carrier(task_id)
    except Exception as exc:
        log.warning("tracing_error", error=str(exc), task_id=task_id)
        return "", ""
