"""Typed TaskEvents and AgentState on the wire: the codec keeps every domain event kind intact."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchgpt import codec
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import (
    EVENT_CLASSES,
    AgentInfo,
    AgentState,
    ApprovalRequest,
    Artifact,
    EventKind,
    TaskEvent,
    TaskResult,
    TaskState,
)

EVENTS = [
    TaskEvent("t1", EventKind.STATUS, seq=1, state=TaskState.RUNNING, text="running on a1", agent_id="a1"),
    TaskEvent("t1", EventKind.STATUS, seq=2, state=TaskState.QUEUED, text="requeued", data={"requeued": "true"}),
    TaskEvent("t1", EventKind.LOG, seq=3, text="a line"),
    TaskEvent("t1", EventKind.TOKEN, seq=4, text="tok", agent_id="a1", parent_task_id="p"),
    TaskEvent("t1", EventKind.STEP, seq=5, text="write_file", data={"tool": "write_file"}),
    TaskEvent("t1", EventKind.ARTIFACT, seq=6, text="a.md", artifact=Artifact("a.md", 3, "abc", "document")),
    TaskEvent("t1", EventKind.APPROVAL, seq=7, text="run ls?",
              approval=ApprovalRequest("r1", "run", '{"cmd": "ls"}', "run ls?")),
    TaskEvent("t1", EventKind.RESULT, seq=8, state=TaskState.FAILED, text="boom",
              result=TaskResult("t1", TaskState.FAILED, error="boom", agent_id="a1", agent_type="echo")),
]


@pytest.mark.parametrize("ev", EVENTS, ids=[f"{e.kind}-{e.seq}" for e in EVENTS])
def test_every_event_kind_round_trips_through_its_typed_body(ev: TaskEvent) -> None:
    m = codec.event_to_pb(ev, agent_type="echo")
    assert m.WhichOneof("body") == str(ev.kind)
    assert m.agent_type == "echo"
    wire = pb.TaskEvent.FromString(m.SerializeToString())
    back = codec.event_from_pb(wire, ts_ms=ev.ts_ms)
    assert back == replace(ev, agent_type="echo")  # the agent type travels with the event
    assert type(back) is EVENT_CLASSES[ev.kind]


def test_an_event_without_a_body_or_with_an_incomplete_one_is_refused_naming_the_field() -> None:
    with pytest.raises(codec.DecodeError, match="no body"):
        codec.event_from_pb(pb.TaskEvent(task_id="t"))
    with pytest.raises(codec.DecodeError, match=r"artifact\.artifact\.path"):
        codec.event_from_pb(pb.TaskEvent(task_id="t", artifact=pb.ArtifactEvent(text="x")))
    with pytest.raises(codec.DecodeError, match=r"approval\.request\.request_id"):
        codec.event_from_pb(pb.TaskEvent(task_id="t", approval=pb.ApprovalEvent(text="x")))


@pytest.mark.parametrize("state", list(AgentState))
def test_agent_state_is_an_enum_on_the_wire(state: AgentState) -> None:
    info = AgentInfo("a1", "echo", state=state, current_task="t" if state == AgentState.BUSY else "")
    m = codec.agent_to_pb(info)
    assert pb.AgentState.Name(m.state) == state.name
    assert codec.agent_from_pb(pb.AgentInfo.FromString(m.SerializeToString())) == info
