"""Round trips of every domain type through its one codec (issue 12, item 1), by hypothesis:
domain -> protobuf -> domain (orchgpt.wire.codec, through serialized bytes) and
domain -> dict -> JSON -> domain (orchgpt.wire.dicts, which the SQLite store and the CLI's
--json both use). Where a protobuf message carries only part of a type (TaskInfo, TaskSpec)
the test says which part."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchgpt.checks import Check
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import (
    EVENT_CLASSES,
    Action,
    AgentInfo,
    AgentState,
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    Artifact,
    Command,
    Delegation,
    EventKind,
    SessionInfo,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
    child_task_id,
    new_id,
)
from orchgpt.store.sqlite import SqliteStore
from orchgpt.wire import codec, dicts

pytestmark = pytest.mark.timeout(120)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # protobuf strings are UTF-8
name = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
i64 = st.integers(0, 2**62)
i32 = st.integers(0, 2**31 - 1)
smap = st.dictionaries(text, text, max_size=3)
usages = st.builds(Usage, i64, i64, st.floats(0, 1e9, allow_nan=False), text, i64)
artifacts = st.builds(Artifact, text.filter(bool), i64, text, text)
final = st.sampled_from([TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED])
checks = st.builds(
    Check, text.filter(bool), text, st.sampled_from(["passed", "failed", "skipped"]), text, st.booleans()
)
results = st.builds(
    TaskResult,
    text,
    final,
    text,
    text,
    st.lists(artifacts, max_size=2),
    usages,
    text,
    text,
    text,
    smap,
    st.lists(checks, max_size=3),
)
approvals = st.builds(ApprovalRequest, text.filter(bool), text, text, text)
actions = st.sampled_from(list(Action))


@st.composite
def events(draw: st.DrawFn) -> TaskEvent:
    """A valid event of any kind: what its kind has is set, nothing else."""
    kind = draw(st.sampled_from(list(EventKind)))
    common: dict[str, Any] = dict(
        task_id=draw(text),
        seq=draw(i64),
        text=draw(text),
        agent_id=draw(text),
        parent_task_id=draw(text),
        data=draw(smap),
        ts_ms=draw(st.integers(1, 2**62)),
        agent_type=draw(text),
    )
    if kind == EventKind.STATUS:
        common["state"] = draw(st.sampled_from(list(TaskState)))
    elif kind == EventKind.ARTIFACT:
        common["artifact"] = draw(artifacts)
    elif kind == EventKind.APPROVAL:
        common["approval"] = draw(approvals)
    elif kind == EventKind.RESULT:
        common["result"] = r = draw(results)
        common["state"] = r.state
    return EVENT_CLASSES[kind](**common)


commands = st.builds(Command, name, actions, text, name, text, text, st.booleans(), smap)
tasks = st.builds(
    Task,
    text,
    name,
    actions,
    text,
    name,
    text,
    text,
    st.booleans(),
    smap,
    st.sampled_from(list(TaskState)),
    text,
    i32,
    i64,
    i64,
    st.none() | results,
    text,
    text,
    text,
    st.lists(results, max_size=2),
)
agents = st.builds(
    AgentInfo,
    text,
    text,
    st.lists(text, max_size=3),
    text,
    st.sampled_from(list(AgentState)),
    text,
    i64,
    st.booleans(),
    i64,
)
sessions = st.builds(
    SessionInfo,
    text,
    i64,
    i64,
    i32,
    i64,
    usages,
    st.dictionaries(text, usages, max_size=2),
    st.booleans(),
    st.lists(text, max_size=3),
    text,
)
delegations = st.builds(Delegation, name, text, name, actions, smap, st.lists(results, max_size=2), text)


def wire(m: Any) -> Any:
    return type(m).FromString(m.SerializeToString())


def via_json(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, allow_nan=False))  # type: ignore[no-any-return]


# ---- domain -> protobuf -> domain


@SETTINGS
@given(usages, artifacts, results)
def test_usage_artifact_and_result_round_trip_through_protobuf(u: Usage, a: Artifact, r: TaskResult) -> None:
    assert codec.usage_from_pb(wire(codec.usage_to_pb(u))) == u
    assert codec.artifact_from_pb(wire(codec.artifact_to_pb(a))) == a
    assert codec.result_from_pb(wire(codec.result_to_pb(r))) == r
    assert codec.result_from_bytes(codec.result_to_bytes(r)) == r


@SETTINGS
@given(events())
def test_every_event_round_trips_through_protobuf_and_keeps_its_class(e: TaskEvent) -> None:
    back = codec.event_from_pb(wire(codec.event_to_pb(e)), ts_ms=e.ts_ms)
    assert back == e and type(back) is type(e)
    env = wire(codec.event_envelope(e))
    assert codec.event_from_pb(env.event, env.timestamp_ms) == e
    # relayed from the kept wire form (the daemon's hot path): the same envelope body
    kept = codec.event_from_pb(wire(codec.event_to_pb(e)), ts_ms=e.ts_ms)
    codec.encode_event(kept, codec.event_to_pb(e))
    assert codec.event_envelope(kept).event == codec.event_to_pb(e)


@SETTINGS
@given(
    commands,
    approvals,
    st.builds(ApprovalResponse, text, st.sampled_from(list(ApprovalDecision)), st.integers(1, 2**31 - 1), text),
)
def test_command_and_approvals_round_trip_through_protobuf(c: Command, a: ApprovalRequest, r: ApprovalResponse) -> None:
    assert codec.command_from_pb(wire(codec.command_to_pb(c))) == c
    assert codec.approval_request_from_pb(wire(codec.approval_request_to_pb(a))) == a
    assert codec.approval_response_from_pb(wire(codec.approval_response_to_pb(r))) == r


@SETTINGS
@given(tasks)
def test_a_task_round_trips_through_task_info_and_task_spec(t: Task) -> None:
    # TaskInfo (GetTask, ListTasks): everything but the routing and the run's parameters
    info = codec.task_from_pb(wire(codec.task_to_pb(t)))
    assert info == replace(t, approval=False, options={}, delegated_by="", inputs=[])
    # TaskSpec (RUN): what the agent needs to run it; attempts is this attempt's number
    spec = codec.task_from_spec(wire(codec.task_to_spec(t)))
    assert spec == replace(
        t,
        state=TaskState.QUEUED,
        agent_id="",
        created_ms=spec.created_ms,
        updated_ms=spec.updated_ms,
        result=None,
        error="",
        submitted_by="",
        delegated_by="",
    )


@SETTINGS
@given(delegations, name)
def test_a_delegation_round_trips_through_its_task_spec(d: Delegation, parent: str) -> None:
    back, parent_id, task_id = codec.delegation_from_spec(wire(codec.delegation_to_spec(d, parent)))
    assert (back, parent_id) == (replace(d, key=""), parent)  # the key stays the agent's
    assert task_id == (child_task_id(parent, d.key) if d.key else "")


@SETTINGS
@given(agents, sessions)
def test_agents_and_sessions_round_trip_through_protobuf(a: AgentInfo, s: SessionInfo) -> None:
    assert codec.agent_from_pb(wire(codec.agent_to_pb(a))) == a
    assert codec.session_from_pb(wire(codec.session_to_pb(s))) == s


# ---- domain -> dict (JSON) -> domain


@SETTINGS
@given(usages, artifacts, results, approvals, commands)
def test_small_types_round_trip_through_json(
    u: Usage, a: Artifact, r: TaskResult, ap: ApprovalRequest, c: Command
) -> None:
    assert dicts.usage_from_dict(via_json(dicts.usage_to_dict(u))) == u
    assert dicts.artifact_from_dict(via_json(dicts.artifact_to_dict(a))) == a
    assert dicts.result_from_dict(via_json(dicts.result_to_dict(r))) == r
    assert dicts.approval_request_from_dict(via_json(dicts.approval_request_to_dict(ap))) == ap
    assert dicts.command_from_dict(via_json(dicts.command_to_dict(c))) == c


@SETTINGS
@given(events())
def test_every_event_round_trips_through_json_whole_and_compact(e: TaskEvent) -> None:
    back = dicts.event_from_dict(via_json(dicts.event_to_dict(e)))
    assert back == e and type(back) is type(e)
    compact = via_json(dicts.event_body_to_dict(e))
    compact.update(task_id=e.task_id, kind=str(e.kind), seq=e.seq, ts_ms=e.ts_ms, agent_type=e.agent_type)
    assert dicts.event_from_dict(compact) == e


@SETTINGS
@given(tasks, agents, sessions)
def test_tasks_agents_and_sessions_round_trip_through_json(t: Task, a: AgentInfo, s: SessionInfo) -> None:
    assert dicts.task_from_dict(via_json(dicts.task_to_dict(t))) == t
    assert dicts.agent_from_dict(via_json(dicts.agent_to_dict(a))) == a
    assert dicts.session_from_dict(via_json(dicts.session_to_dict(s))) == s


# ---- the store and the CLI use these dicts


def test_the_sqlite_store_keeps_tasks_and_events_as_the_dicts_say(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "orchgpt.db"))

    @settings(max_examples=25, deadline=None)
    @given(t=tasks, evs=st.lists(events(), min_size=1, max_size=4))
    def check(t: Task, evs: list[TaskEvent]) -> None:
        t = replace(t, task_id=new_id())
        store.create_task(t)
        assert store.get_task(t.task_id) == t
        stored = [replace(e, task_id=t.task_id, seq=i + 1, agent_type="") for i, e in enumerate(evs)]
        store.append_events(stored)
        assert store.events(t.task_id) == stored  # an event's agent type is its task's: not stored

    try:
        check()
    finally:
        store.close()


@SETTINGS
@given(events())
def test_the_clis_json_event_is_the_dict_form(e: TaskEvent) -> None:
    from cli.render import event_json, result_json

    want = {"type": "event", **dicts.event_to_dict(e), "result": result_json(e.result)}
    assert event_json(e) == want
    assert list(event_json(e)) == [
        "type",
        "kind",
        "task_id",
        "seq",
        "state",
        "text",
        "agent_type",
        "agent_id",
        "parent_task_id",
        "ts_ms",
        "data",
        "artifact",
        "approval",
        "result",
    ]


def test_agentd_converts_tasks_only_through_the_codec() -> None:
    import agentd.link
    import agentd.link_tasks

    src = inspect.getsource(agentd.link) + inspect.getsource(agentd.link_tasks)  # (its running tasks)
    assert "pb.TaskSpec(" not in src and "spec.input" not in src
    assert "codec.task_from_spec(" in src and "codec.delegation_to_spec(" in src


@pytest.mark.parametrize(
    "cls, to_dict",
    [
        (Usage, dicts.usage_to_dict),
        (Artifact, dicts.artifact_to_dict),
        (TaskResult, dicts.result_to_dict),
        (ApprovalRequest, dicts.approval_request_to_dict),
        (Command, dicts.command_to_dict),
        (Task, dicts.task_to_dict),
        (AgentInfo, dicts.agent_to_dict),
        (SessionInfo, dicts.session_to_dict),
        (TaskEvent, dicts.event_to_dict),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_each_dict_form_has_every_field_of_its_type(cls: type, to_dict: Any) -> None:
    """A field added to a domain type must be added to its dict form (the store and --json)."""
    from dataclasses import fields

    example = {
        Usage: Usage(),
        Artifact: Artifact("p"),
        TaskResult: TaskResult("t", TaskState.FAILED),
        ApprovalRequest: ApprovalRequest("r", "tool"),
        Command: Command("echo"),
        Task: Task("t", "echo"),
        AgentInfo: AgentInfo("a", "echo"),
        SessionInfo: SessionInfo("s"),
        TaskEvent: TaskEvent("t", EventKind.LOG),
    }[cls]
    assert set(to_dict(example)) == {f.name for f in fields(cls) if f.init}


def test_a_results_checks_are_typed_on_the_wire_and_a_bad_one_is_refused() -> None:
    """Issue 18: checks are protocol messages (TaskResult.checks), not text in ``data``."""
    r = TaskResult(
        "t",
        TaskState.FAILED,
        checks=[
            Check("mutation", "agentd mutation", "failed", "0/3"),
            Check("ruff", "ruff", "passed", "", required=False),
        ],
    )
    m = codec.result_to_pb(r)
    assert [(c.name, c.outcome, c.advisory) for c in m.checks] == [
        ("mutation", pb.CHECK_FAILED, False),
        ("ruff", pb.CHECK_PASSED, True),
    ]
    assert "checks" not in m.data and codec.result_from_pb(m) == r
    m.checks.add(name="x", tool="y")  # no outcome
    with pytest.raises(codec.DecodeError, match="check 'x'"):
        codec.result_from_pb(m)
