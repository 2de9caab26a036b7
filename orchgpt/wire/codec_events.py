"""The codec of task events and approvals: protobuf TaskEvent <-> the typed domain events
(orchgpt.wire.codec re-exports all of it)."""

from __future__ import annotations

from ..iac.v1 import iac_pb2 as pb
from ..models import (
    EVENT_CLASSES,
    SEQ_FROM,
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    EventKind,
    TaskEvent,
    TokenEvent,
    now_ms,
)
from .codec_basics import (
    DecodeError,
    artifact_from_pb,
    artifact_to_pb,
    fast_id,
    result_from_pb,
    result_to_pb,
    state_from_pb,
    state_to_pb,
)

# TaskEvent's oneof body field per domain event kind (the field names are the kinds' values)
_KIND_FROM_BODY: dict[str, EventKind] = {str(k): k for k in EventKind}
_DECISION_TO_PB: dict[ApprovalDecision, pb.ApprovalDecision.ValueType] = {
    ApprovalDecision.APPROVE: pb.APPROVE,
    ApprovalDecision.REJECT: pb.REJECT,
    ApprovalDecision.APPROVE_NEXT: pb.APPROVE_NEXT,
    ApprovalDecision.FEEDBACK: pb.FEEDBACK,
}
_DECISION_FROM_PB: dict[int, ApprovalDecision] = {v: k for k, v in _DECISION_TO_PB.items()}


def approval_request_to_pb(a: ApprovalRequest) -> pb.ApprovalRequest:
    return pb.ApprovalRequest(
        request_id=a.request_id,
        tool=a.tool,
        arguments_json=a.arguments_json,
        summary=a.summary,
        question=a.question,
        choices=a.choices,
    )


def approval_request_from_pb(m: pb.ApprovalRequest) -> ApprovalRequest:
    return ApprovalRequest(m.request_id, m.tool, m.arguments_json, m.summary, m.question, list(m.choices))


def approval_response_to_pb(a: ApprovalResponse) -> pb.ApprovalResponse:
    return pb.ApprovalResponse(
        request_id=a.request_id,
        decision=_DECISION_TO_PB[a.decision],
        count=a.count,
        feedback=a.feedback,
        answer=a.answer,
    )


def approval_response_from_pb(m: pb.ApprovalResponse) -> ApprovalResponse:
    try:
        decision = _DECISION_FROM_PB[m.decision]
    except KeyError:
        raise DecodeError("approval response has no decision") from None
    return ApprovalResponse(m.request_id, decision, m.count or 1, m.feedback, m.answer)


def event_to_pb(e: TaskEvent, agent_type: str = "") -> pb.TaskEvent:
    """The typed wire event: the domain kind picks the oneof body (text, state, artifact,
    approval or result go where that kind has them). ``agent_type``: the task's agent type
    (default: the event's own)."""
    m = pb.TaskEvent(
        task_id=e.task_id,
        agent_id=e.agent_id,
        parent_task_id=e.parent_task_id,
        seq=e.seq,
        data=e.data,
        agent_type=agent_type or e.agent_type,
    )
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
    ev = EVENT_CLASSES[kind](
        task_id=m.task_id,
        kind=kind,
        seq=m.seq,
        text=sub.text,
        agent_id=m.agent_id,
        parent_task_id=m.parent_task_id,
        data=dict(m.data),
        ts_ms=ts_ms or now_ms(),
        agent_type=m.agent_type,
    )
    if kind == EventKind.TOKEN:
        if m.deltas > 1 and isinstance(ev, TokenEvent):  # an agent's folded deltas (wire/token_fold.py)
            ev.deltas = m.deltas
    elif kind == EventKind.STATUS:
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
    Call it once ``m`` holds what the relayed event says (its task id and agent type). What
    orchgpt sets on the way out is not kept: an agent's ``deltas`` and ``data["seq_from"]``
    (``event_envelope`` stamps the range the event was numbered with)."""
    if m.deltas:
        m.deltas = 0
    if m.data and SEQ_FROM in m.data:
        del m.data[SEQ_FROM]
    e.encoded = m.SerializeToString()


def event_envelope(e: TaskEvent, sender: str = "orchgpt", agent_type: str = "") -> pb.Envelope:
    """The TASK_EVENT envelope of an event. An event with its wire form kept (``encode_event``)
    is re-stamped from it (seq, agent id, parent task: what orchgpt sets) and keeps the agent
    type it was encoded with."""
    env = pb.Envelope(id=fast_id(), sender=sender, type=pb.TASK_EVENT, task_id=e.task_id, timestamp_ms=e.ts_ms)
    if e.encoded:
        m = env.event
        m.MergeFromString(e.encoded)
        m.seq = e.seq
        m.agent_id = e.agent_id
        m.parent_task_id = e.parent_task_id
        if e.data and SEQ_FROM in e.data:  # folded deltas: the range they were numbered with
            m.data[SEQ_FROM] = e.data[SEQ_FROM]
    else:
        env.event.CopyFrom(event_to_pb(e, agent_type))
    return env
