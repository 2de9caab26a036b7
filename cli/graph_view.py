"""How a graph run's node executions show under `/task ID`: one row a node execution, with its
state, its sub-task, its inputs and its outputs (from the run's result, else its sub-tasks)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .render import Line, one_line, table, timestamp

if TYPE_CHECKING:
    from orchgpt.models import Task


def _cell(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return one_line(text, width) or "-"


def node_executions(task: Task, children: list[Task]) -> list[dict[str, Any]]:
    """Every node execution of a graph run: node, block, state, task_id, inputs, outputs, times."""
    kids = {c.task_id: c for c in children}
    raw = task.result.data.get("nodes", "") if task.result is not None else ""
    try:
        nodes = json.loads(raw) if raw else []
    except ValueError:
        nodes = []
    out: list[dict[str, Any]] = []
    for n in nodes:
        for r in n.get("runs", []) or [{}]:
            kid = kids.get(r.get("task_id", ""))
            out.append(
                {
                    "node": n.get("node", ""),
                    "block": n.get("block", ""),
                    "state": r.get("state", n.get("state", "")),
                    "task_id": r.get("task_id", ""),
                    "inputs": r.get("inputs"),
                    "outputs": r.get("outputs"),
                    "error": r.get("error", "") or (n.get("error", "") if not r else ""),
                    "started_ms": r.get("started_ms", kid.created_ms if kid else 0),
                    "finished_ms": r.get("finished_ms", kid.updated_ms if kid else 0),
                }
            )
    if not out:  # still running: what the sub-tasks say
        out = [
            {
                "node": "?",
                "block": c.agent_type,
                "state": str(c.state),
                "task_id": c.task_id,
                "inputs": c.input,
                "outputs": c.result.output if c.result else None,
                "error": c.error,
                "started_ms": c.created_ms,
                "finished_ms": c.updated_ms,
            }
            for c in children
        ]
    return out


def node_table(task: Task, children: list[Task]) -> list[Line]:
    if task.agent_type != "graph":
        return []
    rows = node_executions(task, children)
    if not rows:
        return []
    lines: list[Line] = [[("head", f"node executions ({len(rows)})")]]
    body = [
        [
            r["node"],
            r["block"],
            r["state"],
            _clock(r["started_ms"]),
            _took(r),
            _cell(r["inputs"], 90),
            _cell(r["error"] or r["outputs"], 90),
            r["task_id"] or "-",
        ]
        for r in rows
    ]
    lines += table(["NODE", "BLOCK", "STATE", "STARTED", "TOOK", "INPUTS", "OUTPUTS", "TASK"], body, width=400)
    return lines


def _clock(ms: int) -> str:
    return timestamp(ms)[11:] if ms else "-"


def _took(r: dict[str, Any]) -> str:
    if not r["started_ms"] or not r["finished_ms"]:
        return "-"
    return f"{(r['finished_ms'] - r['started_ms']) / 1000:.2f}s"
