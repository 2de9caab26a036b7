"""protobuf <-> domain converters. The only module besides the transport that imports _pb2."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from ..errors import ErrorCode, OrchgptError
from ..iac.v1 import iac_pb2 as pb
from ..models import (
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
)

_ACTION_TO_PB: dict[Action, pb.Action.ValueType] = {
    Action.CREATE: pb.CREATE_ACTION,
    Action.RUN: pb.RUN_ACTION,
    Action.TERMINATE: pb.TERMINATE_ACTION,
    Action.STATUS: pb.STATUS_ACTION,
}
# keyed by int: a wire value outside the enum (from a newer peer) is looked up, and missed
_ACTION_FROM_PB: dict[int, Action] = {v: k for k, v in _ACTION_TO_PB.items()}
_STATE_TO_PB: dict[TaskState, pb.TaskState.ValueType] = {
    TaskState.QUEUED: pb.QUEUED,
    TaskState.ASSIGNED: pb.ASSIGNED,
    TaskState.RUNNING: pb.RUNNING,
    TaskState.SUCCEEDED: pb.SUCCEEDED,
    TaskState.FAILED: pb.FAILED,
    TaskState.CANCELLED: pb.CANCELLED,
}
_STATE_FROM_PB: dict[int, TaskState] = {v: k for k, v in _STATE_TO_PB.items()}
# TaskEvent's oneof body field per domain event kind (the field names are the kinds' values)
_KIND_FROM_BODY: dict[str, EventKind] = {str(k): k for k in EventKind}
_AGENT_STATE_TO_PB: dict[AgentState, pb.AgentState.ValueType] = {
    AgentState.STARTING: pb.STARTING,
    AgentState.IDLE: pb.IDLE,
    AgentState.BUSY: pb.BUSY,
    AgentState.LOST: pb.LOST,
}
_AGENT_STATE_FROM_PB: dict[int, AgentState] = {v: k for k, v in _AGENT_STATE_TO_PB.items()}
_DECISION_TO_PB: dict[ApprovalDecision, pb.ApprovalDecision.ValueType] = {
    ApprovalDecision.APPROVE: pb.APPROVE,
    ApprovalDecision.REJECT: pb.REJECT,
    ApprovalDecision.APPROVE_NEXT: pb.APPROVE_NEXT,
    ApprovalDecision.FEEDBACK: pb.FEEDBACK,
}
_DECISION_FROM_PB: dict[int, ApprovalDecision] = {v: k for k, v in _DECISION_TO_PB.items()}


_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def fast_id() -> str:
    """A unique envelope id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_id_counter):x}"


class DecodeError(OrchgptError, ValueError):
    """A protobuf message has a field the domain cannot accept (still a ValueError for callers
    that catch it as one: journal lines, bridge messages)."""

    code = ErrorCode.INVALID_ARGUMENT


def action_from_pb(v: int) -> Action:
    try:
        return _ACTION_FROM_PB[v]
    except KeyError:
        raise DecodeError(f"invalid action {v}: expected create, run, terminate or status") from None


def action_to_pb(a: Action) -> pb.Action.ValueType:
    return _ACTION_TO_PB[a]


def state_to_pb(s: TaskState | None) -> pb.TaskState.ValueType:
    return _STATE_TO_PB[s] if s else pb.TASK_STATE_UNSPECIFIED


def state_from_pb(v: int) -> TaskState | None:
    return _STATE_FROM_PB.get(v)


# ---- envelopes

def new_envelope(type_: pb.MessageType.ValueType, sender: str = "orchgpt", **fields: Any) -> pb.Envelope:
    env = pb.Envelope(id=fast_id(), sender=sender, type=type_, timestamp_ms=int(time.time() * 1000))
    for k, v in fields.items():
        if k in ("to_agent", "to_type", "to_client"):
            target = {"to_agent": "agent_id", "to_type": "agent_type", "to_client": "client_id"}[k]
            setattr(env.recipient, target, v)
        elif isinstance(v, str | int | bytes):
            setattr(env, k, v)
        else:
            getattr(env, k).CopyFrom(v)
    return env


# ---- usage, artifacts, results

def usage_to_pb(u: Usage) -> pb.Usage:
    return pb.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                    cost_usd=u.cost_usd, model=u.model, calls=u.calls)


def usage_from_pb(m: pb.Usage) -> Usage:
    return Usage(m.prompt_tokens, m.completion_tokens, m.cost_usd, m.model, m.calls)


def artifact_to_pb(a: Artifact) -> pb.Artifact:
    return pb.Artifact(path=a.path, size=a.size, sha256=a.sha256, kind=a.kind)


def artifact_from_pb(m: pb.Artifact) -> Artifact:
    return Artifact(m.path, m.size, m.sha256, m.kind)


def result_to_pb(r: TaskResult) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=r.task_id, state=state_to_pb(r.state), output=r.output, error=r.error,
        artifacts=[artifact_to_pb(a) for a in r.artifacts], usage=usage_to_pb(r.usage),
        workspace=r.workspace, agent_type=r.agent_type, agent_id=r.agent_id, data=r.data,
    )


def result_from_pb(m: pb.TaskResult) -> TaskResult:
    state = state_from_pb(m.state)
    if state is None or not state.terminal:
        raise DecodeError(f"a task result must be succeeded, failed or cancelled, not {pb.TaskState.Name(m.state)}")
    return TaskResult(
        task_id=m.task_id, state=state, output=m.output, error=m.error,
        artifacts=[artifact_from_pb(a) for a in m.artifacts], usage=usage_from_pb(m.usage),
        workspace=m.workspace, agent_type=m.agent_type, agent_id=m.agent_id, data=dict(m.data),
    )


# ---- commands and tasks

def command_to_pb(c: Command) -> pb.Command:
    return pb.Command(agent_type=c.agent_type, action=action_to_pb(c.action), input=c.input,
                      language=c.language, session_id=c.session_id, task_id=c.task_id,
                      approval=c.approval, options=c.options)


def command_from_pb(m: pb.Command) -> Command:
    if not m.agent_type.strip():
        raise DecodeError("command has no agent type")
    return Command(agent_type=m.agent_type.strip().lower(), action=action_from_pb(m.action), input=m.input,
                   language=m.language or "python", session_id=m.session_id, task_id=m.task_id,
                   approval=m.approval, options=dict(m.options))


def task_to_spec(t: Task) -> pb.TaskSpec:
    return pb.TaskSpec(
        task_id=t.task_id, parent_task_id=t.parent_task_id, session_id=t.session_id, agent_type=t.agent_type,
        action=action_to_pb(t.action), input=t.input, language=t.language, approval=t.approval,
        attempt=t.attempts, options=t.options, inputs=[result_to_pb(r) for r in t.inputs],
    )


def task_from_spec(m: pb.TaskSpec) -> Task:
    """A RUN body as the agent's Task (``attempts``: this attempt's number)."""
    return Task(
        task_id=m.task_id, agent_type=m.agent_type, action=action_from_pb(m.action), input=m.input,
        language=m.language or "python", session_id=m.session_id, parent_task_id=m.parent_task_id,
        approval=m.approval, attempts=m.attempt, options=dict(m.options),
        inputs=[result_from_pb(r) for r in m.inputs],
    )


def delegation_to_spec(d: Delegation, parent_task_id: str) -> pb.TaskSpec:
    """A DELEGATE_TASK body; with a key, its task id is derived from the parent's (child_task_id)."""
    return pb.TaskSpec(task_id=child_task_id(parent_task_id, d.key) if d.key else "",
                       agent_type=d.agent_type, action=action_to_pb(d.action), input=d.input,
                       language=d.language, parent_task_id=parent_task_id, options=d.options,
                       inputs=[result_to_pb(r) for r in d.inputs])


def delegation_from_spec(m: pb.TaskSpec) -> tuple[Delegation, str, str]:
    """A DELEGATE_TASK body: (delegation, parent task id, sub-task id). The id is the one the
    agent derived from its key (``delegation_to_spec``), or empty; the key itself stays the agent's."""
    if not m.agent_type.strip():
        raise DecodeError("delegated task has no agent type")
    d = Delegation(agent_type=m.agent_type.strip().lower(), input=m.input, language=m.language or "python",
                   action=_ACTION_FROM_PB.get(m.action, Action.CREATE), options=dict(m.options),
                   inputs=[result_from_pb(r) for r in m.inputs])
    return d, m.parent_task_id, m.task_id


def task_to_pb(t: Task) -> pb.TaskInfo:
    info = pb.TaskInfo(
        task_id=t.task_id, parent_task_id=t.parent_task_id, session_id=t.session_id, agent_type=t.agent_type,
        action=action_to_pb(t.action), input=t.input, language=t.language, state=state_to_pb(t.state),
        agent_id=t.agent_id, attempts=t.attempts, created_ms=t.created_ms, updated_ms=t.updated_ms,
        error=t.error, submitted_by=t.submitted_by,
    )
    if t.result:
        info.result.CopyFrom(result_to_pb(t.result))
    return info


def task_from_pb(m: pb.TaskInfo) -> Task:
    return Task(
        task_id=m.task_id, agent_type=m.agent_type, action=_ACTION_FROM_PB.get(m.action, Action.RUN),
        input=m.input, language=m.language, session_id=m.session_id, parent_task_id=m.parent_task_id,
        state=state_from_pb(m.state) or TaskState.QUEUED, agent_id=m.agent_id, attempts=m.attempts,
        created_ms=m.created_ms, updated_ms=m.updated_ms,
        result=result_from_pb(m.result) if m.HasField("result") else None,
        error=m.error, submitted_by=m.submitted_by,
    )


# ---- events

def approval_request_to_pb(a: ApprovalRequest) -> pb.ApprovalRequest:
    return pb.ApprovalRequest(request_id=a.request_id, tool=a.tool, arguments_json=a.arguments_json, summary=a.summary)


def approval_request_from_pb(m: pb.ApprovalRequest) -> ApprovalRequest:
    return ApprovalRequest(m.request_id, m.tool, m.arguments_json, m.summary)


def approval_response_to_pb(a: ApprovalResponse) -> pb.ApprovalResponse:
    return pb.ApprovalResponse(request_id=a.request_id, decision=_DECISION_TO_PB[a.decision],
                               count=a.count, feedback=a.feedback)


def approval_response_from_pb(m: pb.ApprovalResponse) -> ApprovalResponse:
    try:
        decision = _DECISION_FROM_PB[m.decision]
    except KeyError:
        raise DecodeError("approval response has no decision") from None
    return ApprovalResponse(m.request_id, decision, m.count or 1, m.feedback)


def event_to_pb(e: TaskEvent, agent_type: str = "") -> pb.TaskEvent:
    """The typed wire event: the domain kind picks the oneof body (text, state, artifact,
    approval or result go where that kind has them). ``agent_type``: the task's agent type
    (default: the event's own)."""
    m = pb.TaskEvent(task_id=e.task_id, agent_id=e.agent_id, parent_task_id=e.parent_task_id, seq=e.seq,
                     data=e.data, agent_type=agent_type or e.agent_type)
    kind = e.kind
    if kind == EventKind.TOKEN:
        m.token.text = e.text
    elif kind == EventKind.STATUS:
        m.status.state = state_to_pb(e.state)
        m.status.text = e.text
    elif kind == EventKind.LOG:
        m.log.text = e.text
    elif kind == EventKind.STEP:
        m.step.text = e.text
    elif kind == EventKind.ARTIFACT:
        m.artifact.text = e.text
        if e.artifact:
            m.artifact.artifact.CopyFrom(artifact_to_pb(e.artifact))
    elif kind == EventKind.APPROVAL:
        m.approval.text = e.text
        if e.approval:
            m.approval.request.CopyFrom(approval_request_to_pb(e.approval))
    elif kind == EventKind.RESULT:
        m.result.text = e.text
        if e.result:
            m.result.result.CopyFrom(result_to_pb(e.result))
    else:
        raise DecodeError(f"no wire form for event kind {kind!r}")
    return m


def event_from_pb(m: pb.TaskEvent, ts_ms: int = 0) -> TaskEvent:
    """The domain event of a wire event: the class of its body's kind (StatusEvent, ...)."""
    body = m.WhichOneof("body")
    if body is None:
        raise DecodeError("task event has no body: set one of status, log, token, step, artifact, approval")
    kind = _KIND_FROM_BODY[body]
    sub = getattr(m, body)
    ev = EVENT_CLASSES[kind](task_id=m.task_id, kind=kind, seq=m.seq, text=sub.text, agent_id=m.agent_id,
                             parent_task_id=m.parent_task_id, data=dict(m.data),
                             ts_ms=ts_ms or int(time.time() * 1000), agent_type=m.agent_type)
    if kind == EventKind.STATUS:
        ev.state = state_from_pb(sub.state)
    elif kind == EventKind.ARTIFACT:
        if not sub.HasField("artifact") or not sub.artifact.path:
            raise DecodeError("an artifact event needs artifact.artifact.path")
        ev.artifact = artifact_from_pb(sub.artifact)
    elif kind == EventKind.APPROVAL:
        if not sub.HasField("request") or not sub.request.request_id:
            raise DecodeError("an approval event needs approval.request.request_id")
        ev.approval = approval_request_from_pb(sub.request)
    elif kind == EventKind.RESULT and sub.HasField("result"):
        ev.result = result_from_pb(sub.result)
        ev.state = ev.result.state
    return ev


def encode_event(e: TaskEvent, m: pb.TaskEvent) -> None:
    """Keep the wire form ``m`` of ``e`` on it (``e.encoded``) for ``event_envelope``: an event
    relayed as it came is re-stamped instead of encoded again (token deltas are the hot path).
    Call it once ``m`` holds what the relayed event says (its task id and agent type)."""
    e.encoded = m.SerializeToString()


def event_envelope(e: TaskEvent, sender: str = "orchgpt", agent_type: str = "") -> pb.Envelope:
    """The TASK_EVENT envelope of an event. An event with its wire form kept (``encode_event``)
    is re-stamped from it (seq, agent id, parent task: what orchgpt sets) and keeps the agent
    type it was encoded with."""
    env = pb.Envelope(id=fast_id(), sender=sender, type=pb.TASK_EVENT, task_id=e.task_id,
                      timestamp_ms=e.ts_ms)
    if e.encoded:
        m = env.event
        m.MergeFromString(e.encoded)
        m.seq = e.seq
        m.agent_id = e.agent_id
        m.parent_task_id = e.parent_task_id
    else:
        env.event.CopyFrom(event_to_pb(e, agent_type))
    return env


def agent_state_to_pb(s: AgentState | None) -> pb.AgentState.ValueType:
    return _AGENT_STATE_TO_PB.get(s, pb.AGENT_STATE_UNSPECIFIED) if s else pb.AGENT_STATE_UNSPECIFIED


def agent_state_from_pb(v: int) -> AgentState | None:
    return _AGENT_STATE_FROM_PB.get(v)


# ---- agents and sessions

def agent_to_pb(a: AgentInfo) -> pb.AgentInfo:
    return pb.AgentInfo(agent_id=a.agent_id, agent_type=a.agent_type, capabilities=a.capabilities, host=a.host,
                        state=agent_state_to_pb(a.state), current_task=a.current_task,
                        last_heartbeat_ms=a.last_heartbeat_ms, local=a.local, connected_ms=a.connected_ms)


def agent_from_pb(m: pb.AgentInfo) -> AgentInfo:
    state = agent_state_from_pb(m.state) or AgentState.IDLE
    return AgentInfo(m.agent_id, m.agent_type, list(m.capabilities), m.host, state, m.current_task,
                     m.last_heartbeat_ms, m.local, m.connected_ms)


def session_to_pb(s: SessionInfo) -> pb.SessionInfo:
    return pb.SessionInfo(
        session_id=s.session_id, created_ms=s.created_ms, updated_ms=s.updated_ms, task_count=s.task_count,
        message_count=s.message_count, usage=usage_to_pb(s.usage),
        usage_by_agent={k: usage_to_pb(v) for k, v in s.usage_by_agent.items()},
        published=s.published, tags=s.tags, title=s.title,
    )


def session_from_pb(m: pb.SessionInfo) -> SessionInfo:
    return SessionInfo(
        session_id=m.session_id, created_ms=m.created_ms, updated_ms=m.updated_ms, task_count=m.task_count,
        message_count=m.message_count, usage=usage_from_pb(m.usage),
        usage_by_agent={k: usage_from_pb(v) for k, v in m.usage_by_agent.items()},
        published=m.published, tags=list(m.tags), title=m.title,
    )


def result_to_bytes(r: TaskResult) -> bytes:
    """A result as protobuf bytes (the results journal, orchgpt/journal.py)."""
    return result_to_pb(r).SerializeToString()


def result_from_bytes(data: bytes) -> TaskResult:
    """The inverse of result_to_bytes; DecodeError for bytes that are not a TaskResult."""
    try:
        m = pb.TaskResult.FromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise DecodeError(f"not a TaskResult: {exc}") from None
    return result_from_pb(m)
