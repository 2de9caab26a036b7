"""How the SQLite store keeps tasks, results and events: the task columns and statements,
and the JSON of results, inputs and event payloads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ..models import (
    Action,
    ApprovalRequest,
    Artifact,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
)

_TASK_COLUMNS = (
    "task_id", "agent_type", "action", "input", "language", "session_id", "parent_task_id",
    "approval", "options", "state", "agent_id", "attempts", "created_ms", "updated_ms",
    "result", "error", "submitted_by", "delegated_by", "inputs", "reply_to",
)
_TASK_SELECT = f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks"
_TASK_INSERT = (
    f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}, finished) "
    f"VALUES ({', '.join('?' for _ in _TASK_COLUMNS)}, ?)"
)
_TASK_UPSERT = _TASK_INSERT + " ON CONFLICT(task_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in (*_TASK_COLUMNS[1:], "finished")
)
# save_task's fast path rewrites only the columns that change while a task runs:
# neither the indexed identity columns nor, until the task ends, `finished`, so a
# state change touches one table page instead of every index.
_KEYS = ("task_id", "session_id", "parent_task_id", "created_ms")
_MUTABLE = tuple(i for i, c in enumerate(_TASK_COLUMNS) if c not in _KEYS)
_SET_MUTABLE = ", ".join(f"{_TASK_COLUMNS[i]} = ?" for i in _MUTABLE)
_WHERE_KEYS = " WHERE task_id = ? AND session_id = ? AND parent_task_id = ? AND created_ms = ?"
_TASK_UPDATE_RUNNING = f"UPDATE tasks SET {_SET_MUTABLE}{_WHERE_KEYS} AND finished = 0"
_TASK_UPDATE_ENDED = f"UPDATE tasks SET {_SET_MUTABLE}, finished = 1{_WHERE_KEYS}"


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _dumps(obj: Any) -> str:
    if not obj:  # the common empty options / inputs / data
        return "{}" if isinstance(obj, dict) else "[]"
    return _encode(obj)


def _result_dict(r: TaskResult) -> dict[str, Any]:
    # By hand: dataclasses.asdict deep-copies and is several times slower.
    u = r.usage
    return {
        "task_id": r.task_id, "state": str(r.state), "output": r.output, "error": r.error,
        "artifacts": [
            {"path": a.path, "size": a.size, "sha256": a.sha256, "kind": a.kind}
            for a in r.artifacts
        ],
        "usage": {
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "cost_usd": u.cost_usd, "model": u.model, "calls": u.calls,
        },
        "workspace": r.workspace, "agent_type": r.agent_type, "agent_id": r.agent_id,
        "data": r.data,
    }


def _result_to_json(r: TaskResult | None) -> str | None:
    return None if r is None else _dumps(_result_dict(r))


def _result_from_dict(d: Mapping[str, Any]) -> TaskResult:
    return TaskResult(
        task_id=d.get("task_id", ""),
        state=TaskState(d.get("state", TaskState.FAILED.value)),
        output=d.get("output", ""),
        error=d.get("error", ""),
        artifacts=[Artifact(**a) for a in d.get("artifacts", [])],
        usage=Usage(**d.get("usage", {})),
        workspace=d.get("workspace", ""),
        agent_type=d.get("agent_type", ""),
        agent_id=d.get("agent_id", ""),
        data=dict(d.get("data", {})),
    )


def _task_row(t: Task) -> tuple[Any, ...]:
    return (
        t.task_id, t.agent_type, str(t.action), t.input, t.language, t.session_id,
        t.parent_task_id, int(t.approval), _dumps(t.options), str(t.state), t.agent_id,
        t.attempts, t.created_ms, t.updated_ms, _result_to_json(t.result), t.error,
        t.submitted_by, t.delegated_by, _dumps([_result_dict(r) for r in t.inputs]),
        t.reply_to, int(t.state.terminal),
    )


def _task_from_row(row: tuple[Any, ...]) -> Task:
    (task_id, agent_type, action, input_, language, session_id, parent_task_id, approval,
     options, state, agent_id, attempts, created_ms, updated_ms, result, error,
     submitted_by, delegated_by, inputs, reply_to) = row[: len(_TASK_COLUMNS)]
    return Task(
        task_id=task_id, agent_type=agent_type, action=Action(action), input=input_,
        language=language, session_id=session_id, parent_task_id=parent_task_id,
        approval=bool(approval), options=json.loads(options), state=TaskState(state),
        agent_id=agent_id, attempts=attempts, created_ms=created_ms, updated_ms=updated_ms,
        result=_result_from_dict(json.loads(result)) if result else None, error=error,
        submitted_by=submitted_by, delegated_by=delegated_by,
        inputs=[_result_from_dict(d) for d in json.loads(inputs)], reply_to=reply_to,
    )


def _event_payload(e: TaskEvent) -> str:
    p: dict[str, Any] = {}
    if e.state is not None:
        p["state"] = str(e.state)
    if e.text:
        p["text"] = e.text
    if e.artifact is not None:
        a = e.artifact
        p["artifact"] = {"path": a.path, "size": a.size, "sha256": a.sha256, "kind": a.kind}
    if e.result is not None:
        p["result"] = _result_dict(e.result)
    if e.agent_id:
        p["agent_id"] = e.agent_id
    if e.parent_task_id:
        p["parent_task_id"] = e.parent_task_id
    if e.data:
        p["data"] = e.data
    if e.approval is not None:
        p["approval"] = asdict(e.approval)
    return _dumps(p)


def _event_from_row(task_id: str, seq: int, kind: str, ts_ms: int, payload: str) -> TaskEvent:
    p = json.loads(payload)
    return TaskEvent(
        task_id=task_id, kind=EventKind(kind), seq=seq, ts_ms=ts_ms,
        state=TaskState(p["state"]) if "state" in p else None,
        text=p.get("text", ""),
        artifact=Artifact(**p["artifact"]) if "artifact" in p else None,
        result=_result_from_dict(p["result"]) if "result" in p else None,
        agent_id=p.get("agent_id", ""),
        parent_task_id=p.get("parent_task_id", ""),
        data=dict(p.get("data", {})),
        approval=ApprovalRequest(**p["approval"]) if "approval" in p else None,
    )


def _title(t: Task) -> str:
    return f"/{t.agent_type} {t.action} {t.input}"[:120]
