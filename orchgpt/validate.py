"""Checks of decoded messages before a handler acts on them.

Each check returns '' when the message is acceptable, else an INVALID_ARGUMENT detail
naming the field (``envelope.type``, ``command.task_id``, ...) and the rule. Enum fields
are open in proto3: a peer can send any number, which must be refused here rather than
raise inside a handler. Ids and paths must not hold NUL bytes (nor, for ids, be huge).
"""

from __future__ import annotations

from typing import Any

from .iac.v1 import iac_pb2 as pb

MAX_ID_CHARS = 256
MAX_PATH_CHARS = 4096
MAX_AGENT_SLOTS = 1024  # Register.max_concurrent_tasks, and the tasks an agent lists running (the daemon caps lower)
MAX_DELTAS = 65_536  # token deltas one TOKEN event may stand for (TaskEvent.deltas; wire/token_fold.py)

_MESSAGE_TYPES = frozenset(pb.MessageType.values())
_ACTIONS = frozenset(pb.Action.values())
_STATES = frozenset(pb.TaskState.values())
_DECISIONS = frozenset(pb.ApprovalDecision.values())
_AGENT_STATES = frozenset(pb.AgentState.values())


def _enum(value: int, allowed: frozenset[int], field: str, enum: Any) -> str:
    if value in allowed:
        return ""
    names = ", ".join(n for n in enum.keys() if not n.endswith("UNSPECIFIED"))
    return f"{field}: unknown value {value} (expected one of {names})"


def _id(value: str, field: str, limit: int = MAX_ID_CHARS) -> str:
    if not value:
        return ""
    if "\x00" in value:
        return f"{field}: must not contain NUL bytes"
    if len(value) > limit:
        return f"{field}: {len(value)} characters; at most {limit}"
    return ""


def _first(*checks: str) -> str:
    for c in checks:
        if c:
            return c
    return ""


# ---------------------------------------------------------------- bodies
def result(m: pb.TaskResult, field: str) -> str:
    if m.state not in _STATES:
        return _enum(m.state, _STATES, f"{field}.state", pb.TaskState)
    return _first(
        _id(m.task_id, f"{field}.task_id"),
        _id(m.agent_id, f"{field}.agent_id"),
        *(_id(a.path, f"{field}.artifacts.path", MAX_PATH_CHARS) for a in m.artifacts),
    )


def command(m: pb.Command, field: str = "command") -> str:
    return _first(
        _enum(m.action, _ACTIONS, f"{field}.action", pb.Action),
        _id(m.agent_type, f"{field}.agent_type"),
        _id(m.task_id, f"{field}.task_id"),
        _id(m.session_id, f"{field}.session_id"),
        _id(m.language, f"{field}.language"),
    )


def task_spec(m: pb.TaskSpec, field: str = "task") -> str:
    return _first(
        _enum(m.action, _ACTIONS, f"{field}.action", pb.Action),
        _id(m.agent_type, f"{field}.agent_type"),
        _id(m.task_id, f"{field}.task_id"),
        _id(m.parent_task_id, f"{field}.parent_task_id"),
        _id(m.session_id, f"{field}.session_id"),
        *(result(r, f"{field}.inputs") for r in m.inputs),
    )


def event(m: pb.TaskEvent, field: str = "event") -> str:
    body = m.WhichOneof("body")
    return _first(
        _id(m.task_id, f"{field}.task_id"),
        _enum(m.status.state, _STATES, f"{field}.status.state", pb.TaskState) if body == "status" else "",
        result(m.result.result, f"{field}.result.result") if body == "result" else "",
        _id(m.artifact.artifact.path, f"{field}.artifact.artifact.path", MAX_PATH_CHARS) if body == "artifact" else "",
        _id(m.approval.request.request_id, f"{field}.approval.request.request_id") if body == "approval" else "",
        _deltas(m.deltas, body, f"{field}.deltas") if m.deltas else "",
    )


def _deltas(n: int, body: str | None, field: str) -> str:
    if body != "token":
        return f"{field}: only a token event folds deltas (this is a {body} event)"
    if n > MAX_DELTAS:
        return f"{field}: {n} deltas in one event; at most {MAX_DELTAS}"
    return ""


def approval_response(m: pb.ApprovalResponse, field: str) -> str:
    return _first(
        _enum(m.decision, _DECISIONS, f"{field}.decision", pb.ApprovalDecision),
        _id(m.request_id, f"{field}.request_id"),
    )


def _count(n: int, limit: int, field: str) -> str:
    return f"{field}: {n} entries; at most {limit}" if n > limit else ""


def _slots(asked: int, running: int) -> str:
    """Register.max_concurrent_tasks and running_tasks: the daemon grants at most its
    max_agent_concurrency (Registered.max_concurrent_tasks); beyond the protocol's bound it is an error."""
    if asked > MAX_AGENT_SLOTS:
        return (
            f"envelope.register.max_concurrent_tasks: {asked}; at most {MAX_AGENT_SLOTS} (0 or 1: one task at a time)"
        )
    if running > max(asked, 1):
        return (
            f"envelope.register.running_tasks: {running} tasks, more than max_concurrent_tasks "
            f"({max(asked, 1)}): an agent cannot run more tasks than its slots"
        )
    return ""


def envelope(env: pb.Envelope) -> str:
    """An envelope from an agent: its type, ids, addressing and the enums of its body."""
    bad = _first(
        _enum(env.type, _MESSAGE_TYPES, "envelope.type", pb.MessageType),
        _id(env.id, "envelope.id"),
        _id(env.sender, "envelope.sender"),
        _id(env.task_id, "envelope.task_id"),
        _id(env.session_id, "envelope.session_id"),
        _id(env.correlation_id, "envelope.correlation_id"),
    )
    if bad:
        return bad
    target = env.recipient.WhichOneof("target")
    if target in ("agent_id", "agent_type", "client_id"):
        bad = _id(getattr(env.recipient, target), f"envelope.recipient.{target}")
        if bad:
            return bad
    body = env.WhichOneof("body")
    if body == "task":
        return task_spec(env.task, "envelope.task")
    if body == "event":
        return event(env.event, "envelope.event")
    if body == "reply":
        return result(env.reply.result, "envelope.reply.result")
    if body == "command":
        return command(env.command, "envelope.command")
    if body == "approval_response":
        return approval_response(env.approval_response, "envelope.approval_response")
    if body == "register":
        r = env.register
        return _first(
            _id(r.agent_type, "envelope.register.agent_type"),
            _id(r.current_task, "envelope.register.current_task"),
            _slots(r.max_concurrent_tasks, len(r.running_tasks)),
            *(_id(x, "envelope.register.running_tasks") for x in r.running_tasks),
            *(result(x, "envelope.register.pending_results") for x in r.pending_results),
        )
    if body == "file_chunk":
        return _id(env.file_chunk.path, "envelope.file_chunk.path", MAX_PATH_CHARS)
    if body == "heartbeat":
        return _first(
            _enum(env.heartbeat.state, _AGENT_STATES, "envelope.heartbeat.state", pb.AgentState),
            _id(env.heartbeat.current_task, "envelope.heartbeat.current_task"),
            _count(len(env.heartbeat.running_tasks), MAX_AGENT_SLOTS, "envelope.heartbeat.running_tasks"),
            *(_id(x, "envelope.heartbeat.running_tasks") for x in env.heartbeat.running_tasks),
        )
    return ""


# ---------------------------------------------------------------- client requests
def request(method: str, m: Any) -> str:
    """A client RPC's request (by method name); '' when acceptable."""
    if method == "Submit":  # (results_only: SubmitStream's, docs/protocol.md §10)
        if m.results_only:
            return "results_only: only SubmitStream has it; Submit streams every event of its task"
        return _first(command(m.command, "command"), _id(m.sender, "sender"))
    if method == "SubmitStream":  # one submission of a SubmitBatch
        return _first(command(m.command, "command"), _id(m.sender, "sender"))
    if method == "Watch":
        return _id(m.task_id, "task_id")
    if method == "GetTask":
        return _id(m.task_id, "task_id")
    if method == "ListTasks":
        return _first(
            _id(m.session_id, "session_id"), _id(m.page_token, "page_token", 64) if hasattr(m, "page_token") else ""
        )
    if method == "ListAgents":
        return _id(m.agent_type, "agent_type")
    if method == "CancelTask":
        return _id(m.task_id, "task_id")
    if method == "FetchArtifact":
        return _first(_id(m.task_id, "task_id"), _id(m.path, "path", MAX_PATH_CHARS))
    if method == "Approve":
        return _first(_id(m.task_id, "task_id"), approval_response(m.response, "response"))
    if method == "PublishSession":
        return _first(_id(m.session_id, "session_id"), *(_id(t, "tags") for t in m.tags))
    return ""
