"""Typed TaskEvents and AgentState on the wire: the codec keeps every domain event kind intact."""

from __future__ import annotations

from dataclasses import replace

import pytest
from google.protobuf.message import Message

from orchgpt import codec
from orchgpt.batching import Outbox
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.mesh import Mesh, Registration
from orchgpt.models import (
    EVENT_CLASSES,
    Action,
    AgentInfo,
    AgentState,
    ApprovalRequest,
    Artifact,
    Command,
    EventKind,
    TaskEvent,
    TaskResult,
    TaskState,
)
from orchgpt.servicer import EventSubscription, MeshServicer
from orchgpt.store.memory import MemoryStore

EVENTS = [
    TaskEvent("t1", EventKind.STATUS, seq=1, state=TaskState.RUNNING, text="running on a1", agent_id="a1"),
    TaskEvent("t1", EventKind.STATUS, seq=2, state=TaskState.QUEUED, text="requeued", data={"requeued": "true"}),
    TaskEvent("t1", EventKind.LOG, seq=3, text="a line"),
    TaskEvent("t1", EventKind.TOKEN, seq=4, text="tok", agent_id="a1", parent_task_id="p"),
    TaskEvent("t1", EventKind.STEP, seq=5, text="write_file", data={"tool": "write_file"}),
    TaskEvent("t1", EventKind.ARTIFACT, seq=6, text="a.md", artifact=Artifact("a.md", 3, "abc", "document")),
    TaskEvent(
        "t1",
        EventKind.APPROVAL,
        seq=7,
        text="run ls?",
        approval=ApprovalRequest("r1", "run", '{"cmd": "ls"}', "run ls?"),
    ),
    TaskEvent(
        "t1",
        EventKind.RESULT,
        seq=8,
        state=TaskState.FAILED,
        text="boom",
        result=TaskResult("t1", TaskState.FAILED, error="boom", agent_id="a1", agent_type="echo"),
    ),
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


class _Recorder:
    """The agent's link as the mesh sees it (the transport's port): records nothing it needs."""

    def send_task(self, task: object) -> None: ...
    def send_cancel(self, task_id: str, reason: str) -> None: ...
    def send_terminate(self, reason: str) -> None: ...
    def send_approval(self, task_id: str, response: object) -> None: ...
    def send_reply(self, correlation_id: str, result: object) -> None: ...
    def send_ping(self) -> None: ...
    def close(self, reason: str, code: str = "UNAVAILABLE") -> None: ...


def _mesh_and_servicer() -> tuple[Mesh, MeshServicer, Outbox, str]:
    mesh = Mesh(MemoryStore(), builtin_types=("echo",))
    servicer = MeshServicer(mesh, max_message_bytes=1 << 20, max_pending_events=1000)
    mesh.register("a1", Registration("echo"), _Recorder())
    task, _ = mesh.submit(Command("echo", Action.RUN, "x", task_id="t1"), submitted_by="client:test")
    watcher = Outbox()
    mesh.subscribe(EventSubscription(watcher, 1000, end_task=task.task_id), task.task_id)
    return mesh, servicer, watcher, task.task_id


def test_an_agents_event_is_relayed_without_a_protobuf_object_on_the_domain_event() -> None:
    mesh, servicer, watcher, task_id = _mesh_and_servicer()
    env = pb.Envelope(
        id="e1",
        sender="a1",
        type=pb.TASK_EVENT,
        task_id=task_id,
        timestamp_ms=5,
        event=pb.TaskEvent(token=pb.TokenEvent(text="hel"), data={"k": "v"}),
    )
    servicer._from_agent("a1", env, Outbox())
    ev = mesh.store.events(task_id)[-1]
    assert ev.kind == EventKind.TOKEN and ev.text == "hel"
    carried = [k for k, v in vars(ev).items() if isinstance(v, Message)]
    assert carried == [], f"protobuf message(s) on the domain event: {carried}"
    assert ev.agent_type == "echo"
    relayed = [e for e in watcher._items if e.event.WhichOneof("body") == "token"]  # what the client gets
    assert len(relayed) == 1
    m = relayed[0].event
    assert (m.token.text, m.seq, m.agent_id, m.agent_type, dict(m.data)) == ("hel", ev.seq, "a1", "echo", {"k": "v"})
    assert relayed[0].sender == "orchgpt" and relayed[0].timestamp_ms == 5
