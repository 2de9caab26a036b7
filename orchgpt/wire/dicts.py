"""Domain objects <-> plain dicts (JSON): one ``X_to_dict`` / ``X_from_dict`` pair per type.

The SQLite store keeps results, task inputs and event payloads as this JSON, and the CLI's
``--json`` prints it; neither writes its own. Enums are their string values; nested objects
are dicts; nothing else. ``from_dict`` accepts what an older writer left out (its default)
and ignores keys it does not know, so stored JSON stays readable across versions.

Written by hand rather than with ``dataclasses.asdict``: that deep-copies and is several
times slower, and the store converts every event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..checks import Check
from ..models import (
    EVENT_CLASSES,
    Action,
    AgentInfo,
    AgentState,
    ApprovalRequest,
    Artifact,
    Command,
    EventKind,
    SessionInfo,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
)

Dict = dict[str, Any]


def usage_to_dict(u: Usage) -> Dict:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cost_usd": u.cost_usd,
        "model": u.model,
        "calls": u.calls,
    }


def usage_from_dict(d: Mapping[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=d.get("prompt_tokens", 0),
        completion_tokens=d.get("completion_tokens", 0),
        cost_usd=d.get("cost_usd", 0.0),
        model=d.get("model", ""),
        calls=d.get("calls", 0),
    )


def artifact_to_dict(a: Artifact) -> Dict:
    return {"path": a.path, "size": a.size, "sha256": a.sha256, "kind": a.kind}


def artifact_from_dict(d: Mapping[str, Any]) -> Artifact:
    return Artifact(path=d["path"], size=d.get("size", 0), sha256=d.get("sha256", ""), kind=d.get("kind", ""))


def result_to_dict(r: TaskResult) -> Dict:
    return {
        "task_id": r.task_id,
        "state": str(r.state),
        "output": r.output,
        "error": r.error,
        "artifacts": [artifact_to_dict(a) for a in r.artifacts],
        "usage": usage_to_dict(r.usage),
        "workspace": r.workspace,
        "agent_type": r.agent_type,
        "agent_id": r.agent_id,
        "data": r.data,
        "checks": [c.to_dict() for c in r.checks],
    }


def result_from_dict(d: Mapping[str, Any]) -> TaskResult:
    return TaskResult(
        task_id=d.get("task_id", ""),
        state=TaskState(d.get("state", TaskState.FAILED.value)),
        output=d.get("output", ""),
        error=d.get("error", ""),
        artifacts=[artifact_from_dict(a) for a in d.get("artifacts", ())],
        usage=usage_from_dict(d.get("usage") or {}),
        workspace=d.get("workspace", ""),
        agent_type=d.get("agent_type", ""),
        agent_id=d.get("agent_id", ""),
        data=dict(d.get("data") or {}),
        checks=[Check.from_dict(c) for c in d.get("checks") or () if isinstance(c, Mapping)],
    )


def approval_request_to_dict(a: ApprovalRequest) -> Dict:
    return {
        "request_id": a.request_id,
        "tool": a.tool,
        "arguments_json": a.arguments_json,
        "summary": a.summary,
        "question": a.question,
        "choices": list(a.choices),
    }


def approval_request_from_dict(d: Mapping[str, Any]) -> ApprovalRequest:
    return ApprovalRequest(
        request_id=d["request_id"],
        tool=d.get("tool", ""),
        arguments_json=d.get("arguments_json", ""),
        summary=d.get("summary", ""),
        question=d.get("question", ""),
        choices=list(d.get("choices") or ()),
    )


def event_to_dict(e: TaskEvent) -> Dict:
    """Every key, ``None`` for what the event's kind does not have (the CLI's --json lines)."""
    return {
        "kind": str(e.kind),
        "task_id": e.task_id,
        "seq": e.seq,
        "state": str(e.state) if e.state is not None else None,
        "text": e.text,
        "agent_type": e.agent_type,
        "agent_id": e.agent_id,
        "parent_task_id": e.parent_task_id,
        "ts_ms": e.ts_ms,
        "data": e.data,
        "artifact": artifact_to_dict(e.artifact) if e.artifact is not None else None,
        "approval": approval_request_to_dict(e.approval) if e.approval is not None else None,
        "result": result_to_dict(e.result) if e.result is not None else None,
    }


def event_body_to_dict(e: TaskEvent) -> Dict:
    """What ``event_to_dict`` has besides the event's identity (task_id, kind, seq, ts_ms,
    agent_type), with only the keys that have a value: the store's compact event payload
    (``event_from_dict`` reads it back once the identity is added)."""
    d: Dict = {}
    if e.state is not None:
        d["state"] = str(e.state)
    if e.text:
        d["text"] = e.text
    if e.artifact is not None:
        d["artifact"] = artifact_to_dict(e.artifact)
    if e.result is not None:
        d["result"] = result_to_dict(e.result)
    if e.agent_id:
        d["agent_id"] = e.agent_id
    if e.parent_task_id:
        d["parent_task_id"] = e.parent_task_id
    if e.data:
        d["data"] = e.data
    if e.approval is not None:
        d["approval"] = approval_request_to_dict(e.approval)
    return d


def event_from_dict(d: Mapping[str, Any]) -> TaskEvent:
    """The event of ``event_to_dict`` (or of a sparse dict, as the store keeps): its kind's class."""
    kind = EventKind(d["kind"])
    state = d.get("state")
    art, appr, res = d.get("artifact"), d.get("approval"), d.get("result")
    return EVENT_CLASSES[kind](
        task_id=d.get("task_id", ""),
        kind=kind,
        seq=d.get("seq", 0),
        state=TaskState(state) if state is not None else None,
        text=d.get("text", ""),
        artifact=artifact_from_dict(art) if art is not None else None,
        result=result_from_dict(res) if res is not None else None,
        agent_id=d.get("agent_id", ""),
        parent_task_id=d.get("parent_task_id", ""),
        data=dict(d.get("data") or {}),
        ts_ms=d.get("ts_ms", 0),
        approval=approval_request_from_dict(appr) if appr is not None else None,
        agent_type=d.get("agent_type", ""),
    )


def command_to_dict(c: Command) -> Dict:
    return {
        "agent_type": c.agent_type,
        "action": str(c.action),
        "input": c.input,
        "language": c.language,
        "session_id": c.session_id,
        "task_id": c.task_id,
        "approval": c.approval,
        "options": c.options,
    }


def command_from_dict(d: Mapping[str, Any]) -> Command:
    return Command(
        agent_type=d["agent_type"],
        action=Action(d.get("action", Action.RUN.value)),
        input=d.get("input", ""),
        language=d.get("language", "python"),
        session_id=d.get("session_id", ""),
        task_id=d.get("task_id", ""),
        approval=bool(d.get("approval", False)),
        options=dict(d.get("options") or {}),
    )


def task_to_dict(t: Task) -> Dict:
    return {
        "task_id": t.task_id,
        "agent_type": t.agent_type,
        "action": str(t.action),
        "input": t.input,
        "language": t.language,
        "session_id": t.session_id,
        "parent_task_id": t.parent_task_id,
        "approval": t.approval,
        "options": t.options,
        "state": str(t.state),
        "agent_id": t.agent_id,
        "attempts": t.attempts,
        "created_ms": t.created_ms,
        "updated_ms": t.updated_ms,
        "result": result_to_dict(t.result) if t.result is not None else None,
        "error": t.error,
        "submitted_by": t.submitted_by,
        "delegated_by": t.delegated_by,
        "inputs": [result_to_dict(r) for r in t.inputs],
        "reply_to": t.reply_to,
    }


def task_from_dict(d: Mapping[str, Any]) -> Task:
    res = d.get("result")
    return Task(
        task_id=d["task_id"],
        agent_type=d["agent_type"],
        action=Action(d.get("action", Action.RUN.value)),
        input=d.get("input", ""),
        language=d.get("language", "python"),
        session_id=d.get("session_id", ""),
        parent_task_id=d.get("parent_task_id", ""),
        approval=bool(d.get("approval", False)),
        options=dict(d.get("options") or {}),
        state=TaskState(d.get("state", TaskState.QUEUED.value)),
        agent_id=d.get("agent_id", ""),
        attempts=d.get("attempts", 0),
        created_ms=d.get("created_ms", 0),
        updated_ms=d.get("updated_ms", 0),
        result=result_from_dict(res) if res is not None else None,
        error=d.get("error", ""),
        submitted_by=d.get("submitted_by", ""),
        delegated_by=d.get("delegated_by", ""),
        inputs=[result_from_dict(r) for r in d.get("inputs", ())],
        reply_to=d.get("reply_to", "") or "",
    )


def agent_to_dict(a: AgentInfo) -> Dict:
    return {
        "agent_id": a.agent_id,
        "agent_type": a.agent_type,
        "capabilities": list(a.capabilities),
        "host": a.host,
        "state": str(a.state),
        "current_task": a.current_task,
        "last_heartbeat_ms": a.last_heartbeat_ms,
        "local": a.local,
        "connected_ms": a.connected_ms,
        "daemon": a.daemon,
        "max_concurrent_tasks": a.max_concurrent_tasks,
        "running_tasks": list(a.running_tasks),
    }


def agent_from_dict(d: Mapping[str, Any]) -> AgentInfo:
    return AgentInfo(
        agent_id=d["agent_id"],
        agent_type=d["agent_type"],
        capabilities=list(d.get("capabilities", ())),
        host=d.get("host", ""),
        state=AgentState(d.get("state", AgentState.IDLE.value)),
        current_task=d.get("current_task", ""),
        last_heartbeat_ms=d.get("last_heartbeat_ms", 0),
        local=bool(d.get("local", False)),
        connected_ms=d.get("connected_ms", 0),
        daemon=d.get("daemon", "") or "",
        max_concurrent_tasks=int(d.get("max_concurrent_tasks", 1) or 1),
        running_tasks=list(d.get("running_tasks", ())),
    )


def session_to_dict(s: SessionInfo) -> Dict:
    return {
        "session_id": s.session_id,
        "created_ms": s.created_ms,
        "updated_ms": s.updated_ms,
        "task_count": s.task_count,
        "message_count": s.message_count,
        "usage": usage_to_dict(s.usage),
        "usage_by_agent": {k: usage_to_dict(v) for k, v in s.usage_by_agent.items()},
        "published": s.published,
        "tags": list(s.tags),
        "title": s.title,
    }


def session_from_dict(d: Mapping[str, Any]) -> SessionInfo:
    return SessionInfo(
        session_id=d["session_id"],
        created_ms=d.get("created_ms", 0),
        updated_ms=d.get("updated_ms", 0),
        task_count=d.get("task_count", 0),
        message_count=d.get("message_count", 0),
        usage=usage_from_dict(d.get("usage") or {}),
        usage_by_agent={k: usage_from_dict(v) for k, v in (d.get("usage_by_agent") or {}).items()},
        published=bool(d.get("published", False)),
        tags=list(d.get("tags", ())),
        title=d.get("title", ""),
    )
