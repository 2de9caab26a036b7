"""How the SQLite store keeps tasks, results and events: the task columns and statements,
and the JSON of results, inputs and event payloads."""

from __future__ import annotations

import json
from typing import Any

from ..models import Task, TaskEvent, TaskResult
from ..wire import dicts

_TASK_COLUMNS = (
    "task_id",
    "agent_type",
    "action",
    "input",
    "language",
    "session_id",
    "parent_task_id",
    "approval",
    "options",
    "state",
    "agent_id",
    "attempts",
    "created_ms",
    "updated_ms",
    "result",
    "error",
    "submitted_by",
    "delegated_by",
    "inputs",
    "reply_to",
)
_TASK_SELECT = f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks"
_TASK_INSERT = (
    f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}, finished) VALUES ({', '.join('?' for _ in _TASK_COLUMNS)}, ?)"
)
_TASK_UPSERT = (
    _TASK_INSERT
    + " ON CONFLICT(task_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*_TASK_COLUMNS[1:], "finished"))
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


def _result_to_json(r: TaskResult | None) -> str | None:
    return None if r is None else _dumps(dicts.result_to_dict(r))


# The task row: the columns of task_to_dict; JSON in options, result and inputs.
def _task_row(t: Task) -> tuple[Any, ...]:
    d = dicts.task_to_dict(t)
    d["approval"] = int(t.approval)
    d["options"] = _dumps(d["options"])
    d["result"] = None if d["result"] is None else _dumps(d["result"])
    d["inputs"] = _dumps(d["inputs"])
    return (*(d[c] for c in _TASK_COLUMNS), int(t.state.terminal))


def _task_from_row(row: tuple[Any, ...]) -> Task:
    d = dict(zip(_TASK_COLUMNS, row, strict=False))
    d["options"] = json.loads(d["options"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    d["inputs"] = json.loads(d["inputs"])
    return dicts.task_from_dict(d)


# An event row: task_id, seq, kind and ts_ms are columns, the rest is the payload (the
# event's agent_type is its task's: the daemon stamps it again when it sends a stored event).
def _event_payload(e: TaskEvent) -> str:
    return _dumps(dicts.event_body_to_dict(e))


def _event_from_row(task_id: str, seq: int, kind: str, ts_ms: int, payload: str) -> TaskEvent:
    p = json.loads(payload)
    p.update(task_id=task_id, seq=seq, kind=kind, ts_ms=ts_ms)
    return dicts.event_from_dict(p)


def _title(t: Task) -> str:
    return f"/{t.agent_type} {t.action} {t.input}"[:120]
