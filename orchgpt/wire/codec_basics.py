"""The codec's primitives: envelope ids, DecodeError, the enum tables and their converters,
envelopes, usage, artifacts and results (orchgpt.wire.codec re-exports all of it)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from ..checks import FAILED, PASSED, SKIPPED, Check
from ..errors import ErrorCode, OrchgptError
from ..iac.v1 import iac_pb2 as pb
from ..models import (
    Action,
    AgentState,
    Artifact,
    TaskResult,
    TaskState,
    Usage,
    now_ms,
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


_AGENT_STATE_TO_PB: dict[AgentState, pb.AgentState.ValueType] = {
    AgentState.STARTING: pb.STARTING,
    AgentState.IDLE: pb.IDLE,
    AgentState.BUSY: pb.BUSY,
    AgentState.LOST: pb.LOST,
}
_AGENT_STATE_FROM_PB: dict[int, AgentState] = {v: k for k, v in _AGENT_STATE_TO_PB.items()}


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
    env = pb.Envelope(id=fast_id(), sender=sender, type=type_, timestamp_ms=now_ms())
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
    return pb.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=u.cost_usd,
        model=u.model,
        calls=u.calls,
    )


def usage_from_pb(m: pb.Usage) -> Usage:
    return Usage(m.prompt_tokens, m.completion_tokens, m.cost_usd, m.model, m.calls)


def artifact_to_pb(a: Artifact) -> pb.Artifact:
    return pb.Artifact(path=a.path, size=a.size, sha256=a.sha256, kind=a.kind)


def artifact_from_pb(m: pb.Artifact) -> Artifact:
    return Artifact(m.path, m.size, m.sha256, m.kind)


def result_to_pb(r: TaskResult) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=r.task_id,
        state=state_to_pb(r.state),
        output=r.output,
        error=r.error,
        artifacts=[artifact_to_pb(a) for a in r.artifacts],
        usage=usage_to_pb(r.usage),
        workspace=r.workspace,
        agent_type=r.agent_type,
        agent_id=r.agent_id,
        data=r.data,
        checks=[check_to_pb(c) for c in r.checks],
    )


_OUTCOME_TO_PB = {PASSED: pb.CHECK_PASSED, FAILED: pb.CHECK_FAILED, SKIPPED: pb.CHECK_SKIPPED}
_OUTCOME_FROM_PB = {v: k for k, v in _OUTCOME_TO_PB.items()}


def check_to_pb(c: Check) -> pb.Check:
    return pb.Check(
        name=c.name, tool=c.tool, outcome=_OUTCOME_TO_PB[c.outcome], detail=c.detail, advisory=not c.required
    )


def check_from_pb(m: pb.Check) -> Check:
    outcome = _OUTCOME_FROM_PB.get(m.outcome)
    if outcome is None or not m.name:
        raise DecodeError(f"check {m.name!r}: needs a name and an outcome (passed, failed, skipped)")
    return Check(name=m.name, tool=m.tool, outcome=outcome, detail=m.detail, required=not m.advisory)


def result_from_pb(m: pb.TaskResult) -> TaskResult:
    state = state_from_pb(m.state)
    if state is None or not state.terminal:
        raise DecodeError(f"a task result must be succeeded, failed or cancelled, not {pb.TaskState.Name(m.state)}")
    return TaskResult(
        task_id=m.task_id,
        state=state,
        output=m.output,
        error=m.error,
        artifacts=[artifact_from_pb(a) for a in m.artifacts],
        usage=usage_from_pb(m.usage),
        workspace=m.workspace,
        agent_type=m.agent_type,
        agent_id=m.agent_id,
        data=dict(m.data),
        checks=[check_from_pb(c) for c in m.checks],
    )


def agent_state_to_pb(s: AgentState | None) -> pb.AgentState.ValueType:
    return _AGENT_STATE_TO_PB.get(s, pb.AGENT_STATE_UNSPECIFIED) if s else pb.AGENT_STATE_UNSPECIFIED


def agent_state_from_pb(v: int) -> AgentState | None:
    return _AGENT_STATE_FROM_PB.get(v)
