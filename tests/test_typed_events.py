"""Typed task events end to end (issue 12, item 2).

Each event kind is its own domain class (the protobuf TaskEvent body's oneof); the daemon
relays an agent's event without a protobuf object riding on the domain event; the CLI takes
a sub-task's agent type from the event (TaskEvent.agent_type) instead of guessing it from an
agent id or from "queued for X" text. The mesh and servicer here are the real ones over a
memory store; only the agent's link is a recorder (the transport's port).
"""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import (
    ApprovalEvent,
    ApprovalResponse,
    EventKind,
    LogEvent,
    ResultEvent,
    StatusEvent,
    StepEvent,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
)
from orchgpt.wire import codec

pytestmark = pytest.mark.timeout(30)


class Recorder:
    def __init__(self) -> None:
        self.runs: list[str] = []

    def send_task(self, task: Task) -> None:
        self.runs.append(task.task_id)

    def send_cancel(self, task_id: str, reason: str) -> None: ...
    def send_terminate(self, reason: str) -> None: ...
    def send_approval(self, task_id: str, response: ApprovalResponse) -> None: ...
    def send_reply(self, correlation_id: str, result: TaskResult) -> None: ...
    def send_ping(self) -> None: ...
    def close(self, reason: str, code: str = "UNAVAILABLE") -> None: ...


def test_the_base_class_with_a_kind_is_that_kinds_class() -> None:
    assert type(TaskEvent("t", EventKind.LOG, text="x")) is LogEvent
    assert TaskEvent("t", EventKind.LOG, text="x", ts_ms=5) == LogEvent("t", text="x", ts_ms=5)
    assert type(TaskEvent(task_id="t", kind=EventKind.RESULT)) is ResultEvent
    assert StepEvent("t", data={"ok": "false", "check": "ruff"}).ok is False
    assert StepEvent("t", data={"ok": "true"}).ok is True
    assert StepEvent("t").ok is None and StepEvent("t", data={"check": "ruff"}).check == "ruff"
    match TaskEvent("t", EventKind.APPROVAL):
        case ApprovalEvent():
            pass
        case _:
            pytest.fail("an approval event does not match ApprovalEvent")


def test_a_relayed_event_is_re_stamped_by_the_codec_from_its_kept_wire_form() -> None:
    m = pb.TaskEvent(
        task_id="t",
        agent_type="echo",
        agent_id="spoofed",
        seq=99,
        step=pb.StepEvent(text="write_file"),
        data={"tool": "write_file"},
    )
    ev = codec.event_from_pb(pb.TaskEvent.FromString(m.SerializeToString()), ts_ms=7)
    codec.encode_event(ev, m)
    assert isinstance(ev.encoded, bytes) and ev.encoded
    ev.seq, ev.agent_id, ev.parent_task_id = 3, "a1", "p"
    out = codec.event_envelope(ev).event
    assert (out.seq, out.agent_id, out.parent_task_id, out.agent_type) == (3, "a1", "p", "echo")
    assert out.step.text == "write_file" and dict(out.data) == {"tool": "write_file"}
    # a changed copy does not carry the old wire form
    changed = replace(ev, text="other")
    assert changed.encoded == b"" and codec.event_envelope(changed).event.step.text == "other"
    # the same event without its wire form encodes to the same message
    ev.encoded = b""
    assert codec.event_envelope(ev).event == out


def test_the_cli_names_a_sub_task_by_the_agent_type_its_events_carry() -> None:
    """No queued event seen, an agent id that does not name its type, a misleading text:
    the child view takes the type the orchestrator stamped on the event."""
    from cli.context import Context
    from cli.output import StreamOutput
    from cli.runner import handle, new_view

    ctx = Context(StreamOutput(stdout=io.StringIO(), stderr=io.StringIO()))
    parent = new_view(ctx, "p1", "lead")
    handle(ctx, parent, StatusEvent("p1", seq=1, state=TaskState.RUNNING, agent_type="lead"))
    handle(
        ctx,
        parent,
        StatusEvent(
            "c1",
            seq=1,
            state=TaskState.RUNNING,
            text="queued for nobody",
            agent_id="local-wrong-0abc",
            parent_task_id="p1",
            agent_type="helper",
        ),
    )
    assert parent.children["c1"].agent_type == "helper"
    # a child first seen without a type gets it from a later event
    handle(ctx, parent, LogEvent("c2", seq=1, text="x", agent_id="worker-7", parent_task_id="p1"))
    assert parent.children["c2"].agent_type == "sub-task"
    handle(ctx, parent, LogEvent("c2", seq=2, text="y", agent_id="worker-7", agent_type="helper"))
    assert parent.children["c2"].agent_type == "helper"
