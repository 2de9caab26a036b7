"""Tracing's parts in one process (orchgpt/tracing.py, orchgpt/tracing_mesh.py,
agentd/telemetry.py): off by default at no cost, the daemon's spans of a requeued task, the
GenAI content opt-in, trace ids in the logs. Spans go to an in-memory exporter of a local
tracer provider (the process-global one is never set here)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentd import telemetry
from orchgpt import tracing, tracing_mesh
from orchgpt.config import load_settings
from orchgpt.errors import ConfigError
from orchgpt.models import EventKind, TaskEvent, TaskResult, TaskState, Usage

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "ENABLED", True)
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("test"))
    return exporter


def test_off_by_default_everything_is_a_no_op() -> None:
    assert tracing.ENABLED is False  # nothing configured an endpoint in this process
    assert tracing.grpc_metadata() is None
    assert tracing.current_carrier() == ("", "")
    assert tracing_mesh.run_carrier("t1") == ("", "")
    cm = tracing.span("x", None, "SERVER", a=1)
    assert cm is tracing.span("y")  # one shared null context: no allocation per call
    with cm as s:
        assert s is None
    assert telemetry.tool("read_file").__class__.__name__ == "nullcontext"
    assert tracing.log_ids(None, "info", {"event": "e"}) == {"event": "e"}


def test_configure_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in (tracing.ENDPOINT_ENV, tracing.TRACES_ENDPOINT_ENV):
        monkeypatch.delenv(k, raising=False)
    assert tracing.configure("test") is False and tracing.ENABLED is False
    monkeypatch.setenv(tracing.ENDPOINT_ENV, "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.configure("test") is False and tracing.ENABLED is False


def test_otlp_endpoint_setting_is_checked() -> None:
    assert load_settings({}).otlp_endpoint == ""
    assert load_settings({"otlp_endpoint": " http://c:4318 "}).otlp_endpoint == "http://c:4318"
    with pytest.raises(ConfigError, match="otlp_endpoint: 'c:4318' is not an http"):
        load_settings({"otlp_endpoint": "c:4318"})


@dataclass
class _Mesh:
    active: dict[str, Any] = field(default_factory=dict)


def test_daemon_spans_of_a_requeued_task(spans: InMemorySpanExporter) -> None:
    mesh = _Mesh({"t1": SimpleNamespace(agent_type="echo", session_id="s1", action="run", parent_task_id="")})
    ts = tracing_mesh.TaskSpans(mesh)

    def status(state: TaskState, text: str = "", agent: str = "") -> None:
        ts.deliver(TaskEvent("t1", EventKind.STATUS, state=state, text=text, agent_id=agent))

    status(TaskState.QUEUED, "queued for echo")
    status(TaskState.QUEUED, "waiting for an echo agent to start")  # a note: the same wait
    status(TaskState.ASSIGNED, agent="a1")
    tp, _ = ts.run_carrier("t1")
    assert tp.startswith("00-") and len(tp) == 55
    status(TaskState.QUEUED, "agent a1 was lost; requeued")
    status(TaskState.ASSIGNED, agent="a2")
    r = TaskResult("t1", TaskState.SUCCEEDED, usage=Usage(prompt_tokens=7, completion_tokens=3))
    ts.deliver(TaskEvent("t1", EventKind.RESULT, state=TaskState.SUCCEEDED, result=r))
    done = spans.get_finished_spans()
    names = [s.name for s in done]
    assert names.count("orchgpt.queue echo") == 2 and names.count("orchgpt.run echo") == 2
    assert "orchgpt.store_result echo" in names and "orchgpt.dispatch echo" in names
    [task] = [s for s in done if s.name == "orchgpt.task echo"]
    assert task.attributes["gen_ai.usage.input_tokens"] == 7
    assert task.attributes["orchgpt.task.state"] == "succeeded"
    runs = [s for s in done if s.name == "orchgpt.run echo"]
    assert runs[0].status.status_code == StatusCode.ERROR and "lost" in runs[0].status.description
    assert runs[0].attributes["orchgpt.agent.id"] == "a1"
    assert runs[1].status.status_code != StatusCode.ERROR
    assert all(s.context.trace_id == task.context.trace_id for s in done)
    # the RUN's traceparent named the first run span
    assert tp.split("-")[2] == format(runs[0].context.span_id, "016x")
    assert not ts.live


@dataclass
class _Raw:
    content: str = "the answer"
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str = "stop"


async def _chat() -> None:
    ep = SimpleNamespace(model="m1", url="http://models.example:8080/v1")

    async def call(
        ep: Any,
        prof: Any,
        msgs: Any,
        tools: Any,
        on_token: Any,
        opts: Any,
        usage: Usage,
        total: Usage,
    ) -> _Raw:
        usage.add(Usage(prompt_tokens=11, completion_tokens=5, model="m1", calls=1))
        return _Raw()

    await telemetry.chat(
        call,
        ep,
        None,
        [{"role": "user", "content": "SECRET PROMPT"}],
        None,
        None,
        {"temperature": 0.5},
        Usage(prompt_tokens=100),
        Usage(),
    )


def test_chat_span_has_genai_attributes_and_content_only_when_opted_in(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_chat())
    [s] = spans.get_finished_spans()
    a = dict(s.attributes or {})
    assert s.name == "chat m1"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "m1"
    assert a["server.address"] == "models.example" and a["server.port"] == 8080
    assert a["gen_ai.usage.input_tokens"] == 11 and a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert "SECRET" not in repr(a)
    spans.clear()
    monkeypatch.setattr(tracing, "CAPTURE_CONTENT", True)
    asyncio.run(_chat())
    [s] = spans.get_finished_spans()
    assert "SECRET PROMPT" in s.attributes["gen_ai.input.messages"]
    assert "the answer" in s.attributes["gen_ai.output.messages"]


def test_log_lines_carry_the_trace_and_span_ids(spans: InMemorySpanExporter) -> None:
    with tracing.tracer().start_as_current_span("x") as s:
        ev = tracing.log_ids(None, "info", {"event": "e"})
    assert ev["trace_id"] == format(s.get_span_context().trace_id, "032x")
    assert ev["span_id"] == format(s.get_span_context().span_id, "016x")


async def test_agent_to_agent_commands_carry_the_askers_trace(spans: InMemorySpanExporter) -> None:
    from orchgpt.iac.v1 import iac_pb2 as pb
    from orchgpt.wire import codec
    from orchgpt.wire.batching import Outbox
    from tests.test_authz import _link

    link = _link()
    out = Outbox()
    link.outbox = out
    with tracing.tracer().start_as_current_span("asker") as asker:
        ask = asyncio.ensure_future(link.ask("type:echo", b"ping", timeout=5))
        batch = await asyncio.wait_for(out.next_batch(), 2)
    assert batch is not None
    cmd = batch.envelopes[-1]
    assert cmd.traceparent.split("-")[2] == format(asker.get_span_context().span_id, "016x")
    # the answering side (here the same link): its span is the asker's child, in its trace
    link._on_envelope(cmd, out)
    batch = await asyncio.wait_for(out.next_batch(), 2)
    assert batch is not None and batch.envelopes[-1].payload == b"echo: ping"  # the answer
    link._on_envelope(codec.new_envelope(pb.REPLY, "other", correlation_id=cmd.id, payload=b"pong"), out)
    assert await asyncio.wait_for(ask, 2) == b"pong"
    [answer] = [s for s in spans.get_finished_spans() if s.name == "orchgpt.command"]
    assert answer.parent is not None
    assert answer.parent.span_id == asker.get_span_context().span_id
    assert answer.context.trace_id == asker.get_span_context().trace_id
    assert answer.attributes["orchgpt.command.sender"] == "victim"
