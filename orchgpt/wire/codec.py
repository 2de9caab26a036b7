"""protobuf <-> domain converters. The only module besides the transport that imports _pb2."""

from __future__ import annotations

from ..iac.v1 import iac_pb2 as pb
from ..models import (
    Action,
    AgentInfo,
    AgentState,
    Command,
    Delegation,
    SessionInfo,
    Task,
    TaskResult,
    TaskState,
    child_task_id,
)
from .codec_basics import (
    _ACTION_FROM_PB,
    DecodeError,
    action_from_pb,
    action_to_pb,
    agent_state_from_pb,
    agent_state_to_pb,
    artifact_from_pb,
    artifact_to_pb,
    fast_id,
    new_envelope,
    result_from_pb,
    result_to_pb,
    state_from_pb,
    state_to_pb,
    usage_from_pb,
    usage_to_pb,
)
from .codec_events import (
    approval_request_from_pb,
    approval_request_to_pb,
    approval_response_from_pb,
    approval_response_to_pb,
    encode_event,
    event_envelope,
    event_from_pb,
    event_to_pb,
)

# The codec's one import path: the converters of codec_basics.py and codec_events.py are here too.
__all__ = [
    "DecodeError",
    "action_from_pb",
    "action_to_pb",
    "agent_from_pb",
    "agent_state_from_pb",
    "agent_state_to_pb",
    "agent_to_pb",
    "approval_request_from_pb",
    "approval_request_to_pb",
    "approval_response_from_pb",
    "approval_response_to_pb",
    "artifact_from_pb",
    "artifact_to_pb",
    "command_from_pb",
    "command_to_pb",
    "delegation_from_spec",
    "delegation_to_spec",
    "encode_event",
    "event_envelope",
    "event_from_pb",
    "event_to_pb",
    "fast_id",
    "new_envelope",
    "result_from_bytes",
    "result_from_pb",
    "result_to_bytes",
    "result_to_pb",
    "session_from_pb",
    "session_to_pb",
    "state_from_pb",
    "state_to_pb",
    "task_from_pb",
    "task_from_spec",
    "task_to_pb",
    "task_to_spec",
    "usage_from_pb",
    "usage_to_pb",
]


# ---- commands and tasks


def command_to_pb(c: Command) -> pb.Command:
    return pb.Command(
        agent_type=c.agent_type,
        action=action_to_pb(c.action),
        input=c.input,
        language=c.language,
        session_id=c.session_id,
        task_id=c.task_id,
        approval=c.approval,
        options=c.options,
    )


def command_from_pb(m: pb.Command) -> Command:
    if not m.agent_type.strip():
        raise DecodeError("command has no agent type")
    return Command(
        agent_type=m.agent_type.strip().lower(),
        action=action_from_pb(m.action),
        input=m.input,
        language=m.language or "python",
        session_id=m.session_id,
        task_id=m.task_id,
        approval=m.approval,
        options=dict(m.options),
    )


def task_to_spec(t: Task) -> pb.TaskSpec:
    return pb.TaskSpec(
        task_id=t.task_id,
        parent_task_id=t.parent_task_id,
        session_id=t.session_id,
        agent_type=t.agent_type,
        action=action_to_pb(t.action),
        input=t.input,
        language=t.language,
        approval=t.approval,
        attempt=t.attempts,
        options=t.options,
        inputs=[result_to_pb(r) for r in t.inputs],
    )


def task_from_spec(m: pb.TaskSpec) -> Task:
    """A RUN body as the agent's Task (``attempts``: this attempt's number)."""
    return Task(
        task_id=m.task_id,
        agent_type=m.agent_type,
        action=action_from_pb(m.action),
        input=m.input,
        language=m.language or "python",
        session_id=m.session_id,
        parent_task_id=m.parent_task_id,
        approval=m.approval,
        attempts=m.attempt,
        options=dict(m.options),
        inputs=[result_from_pb(r) for r in m.inputs],
    )


def delegation_to_spec(d: Delegation, parent_task_id: str) -> pb.TaskSpec:
    """A DELEGATE_TASK body; with a key, its task id is derived from the parent's (child_task_id)."""
    return pb.TaskSpec(
        task_id=child_task_id(parent_task_id, d.key) if d.key else "",
        agent_type=d.agent_type,
        action=action_to_pb(d.action),
        input=d.input,
        language=d.language,
        parent_task_id=parent_task_id,
        options=d.options,
        inputs=[result_to_pb(r) for r in d.inputs],
    )


def delegation_from_spec(m: pb.TaskSpec) -> tuple[Delegation, str, str]:
    """A DELEGATE_TASK body: (delegation, parent task id, sub-task id). The id is the one the
    agent derived from its key (``delegation_to_spec``), or empty; the key itself stays the agent's."""
    if not m.agent_type.strip():
        raise DecodeError("delegated task has no agent type")
    d = Delegation(
        agent_type=m.agent_type.strip().lower(),
        input=m.input,
        language=m.language or "python",
        action=_ACTION_FROM_PB.get(m.action, Action.CREATE),
        options=dict(m.options),
        inputs=[result_from_pb(r) for r in m.inputs],
    )
    return d, m.parent_task_id, m.task_id


def task_to_pb(t: Task) -> pb.TaskInfo:
    info = pb.TaskInfo(
        task_id=t.task_id,
        parent_task_id=t.parent_task_id,
        session_id=t.session_id,
        agent_type=t.agent_type,
        action=action_to_pb(t.action),
        input=t.input,
        language=t.language,
        state=state_to_pb(t.state),
        agent_id=t.agent_id,
        attempts=t.attempts,
        created_ms=t.created_ms,
        updated_ms=t.updated_ms,
        error=t.error,
        submitted_by=t.submitted_by,
    )
    if t.result:
        info.result.CopyFrom(result_to_pb(t.result))
    return info


def task_from_pb(m: pb.TaskInfo) -> Task:
    return Task(
        task_id=m.task_id,
        agent_type=m.agent_type,
        action=_ACTION_FROM_PB.get(m.action, Action.RUN),
        input=m.input,
        language=m.language,
        session_id=m.session_id,
        parent_task_id=m.parent_task_id,
        state=state_from_pb(m.state) or TaskState.QUEUED,
        agent_id=m.agent_id,
        attempts=m.attempts,
        created_ms=m.created_ms,
        updated_ms=m.updated_ms,
        result=result_from_pb(m.result) if m.HasField("result") else None,
        error=m.error,
        submitted_by=m.submitted_by,
    )


# ---- agents and sessions


def agent_to_pb(a: AgentInfo) -> pb.AgentInfo:
    return pb.AgentInfo(
        agent_id=a.agent_id,
        agent_type=a.agent_type,
        capabilities=a.capabilities,
        host=a.host,
        state=agent_state_to_pb(a.state),
        current_task=a.current_task,
        last_heartbeat_ms=a.last_heartbeat_ms,
        local=a.local,
        connected_ms=a.connected_ms,
        daemon=a.daemon,
        max_concurrent_tasks=a.max_concurrent_tasks,
        running_tasks=a.running_tasks,
    )


def agent_from_pb(m: pb.AgentInfo) -> AgentInfo:
    state = agent_state_from_pb(m.state) or AgentState.IDLE
    return AgentInfo(
        m.agent_id,
        m.agent_type,
        list(m.capabilities),
        m.host,
        state,
        m.current_task,
        m.last_heartbeat_ms,
        m.local,
        m.connected_ms,
        m.daemon,
        max(m.max_concurrent_tasks, 1),
        list(m.running_tasks),  # (empty from a daemon that predates slots: current_task says it)
    )


def session_to_pb(s: SessionInfo) -> pb.SessionInfo:
    return pb.SessionInfo(
        session_id=s.session_id,
        created_ms=s.created_ms,
        updated_ms=s.updated_ms,
        task_count=s.task_count,
        message_count=s.message_count,
        usage=usage_to_pb(s.usage),
        usage_by_agent={k: usage_to_pb(v) for k, v in s.usage_by_agent.items()},
        published=s.published,
        tags=s.tags,
        title=s.title,
    )


def session_from_pb(m: pb.SessionInfo) -> SessionInfo:
    return SessionInfo(
        session_id=m.session_id,
        created_ms=m.created_ms,
        updated_ms=m.updated_ms,
        task_count=m.task_count,
        message_count=m.message_count,
        usage=usage_from_pb(m.usage),
        usage_by_agent={k: usage_from_pb(v) for k, v in m.usage_by_agent.items()},
        published=m.published,
        tags=list(m.tags),
        title=m.title,
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
