"""The SQLite store's tasks and their events (part of sqlite.SqliteStore)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models import (
    Task,
    TaskEvent,
)
from .sqlite_rows import (
    _MUTABLE,
    _TASK_INSERT,
    _TASK_SELECT,
    _TASK_UPDATE_ENDED,
    _TASK_UPDATE_RUNNING,
    _TASK_UPSERT,
    _event_from_row,
    _event_payload,
    _task_from_row,
    _task_row,
    _title,
)


class SqliteTasks:
    """Tasks (create, save, read, list, unfinished) and their events (append, replay)."""

    if TYPE_CHECKING:  # provided by sqlite.SqliteStore
        path: Path

        @contextmanager
        def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]: ...
        def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    # ---- tasks
    def create_task(self, task: Task) -> tuple[Task, bool]:
        with self._tx(f"create task {task.task_id}") as c:
            cur = c.execute(_TASK_INSERT + " ON CONFLICT(task_id) DO NOTHING", _task_row(task))
            if cur.rowcount == 0:
                row = c.execute(_TASK_SELECT + " WHERE task_id = ?", (task.task_id,)).fetchone()
                return _task_from_row(row), False
            self._touch_session(c, task)
            self._write_result(c, task)
        return task, True

    def save_task(self, task: Task) -> None:
        row = _task_row(task)
        with self._tx(f"save task {task.task_id}") as c:
            cur = c.execute(
                _TASK_UPDATE_ENDED if task.state.terminal else _TASK_UPDATE_RUNNING,
                (*(row[i] for i in _MUTABLE), task.task_id, task.session_id, task.parent_task_id, task.created_ms),
            )
            if cur.rowcount == 0:  # not stored yet, identity columns changed, or reopened
                c.execute(_TASK_UPSERT, row)
                self._touch_session(c, task)
            elif task.state.terminal:
                self._touch_session(c, task)
            self._write_result(c, task)

    @staticmethod
    def _touch_session(c: sqlite3.Connection, task: Task) -> None:
        """Create the task's session or extend its time span. Called when a task is
        created and when it ends, so a session runs from its first task's creation
        to its last task's end."""
        if not task.session_id:
            return
        c.execute(
            "INSERT INTO sessions (session_id, created_ms, updated_ms, title) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET "
            "created_ms = min(created_ms, excluded.created_ms), "
            "updated_ms = max(updated_ms, excluded.updated_ms), "
            "title = CASE WHEN title = '' THEN excluded.title ELSE title END",
            (task.session_id, task.created_ms, task.updated_ms, "" if task.parent_task_id else _title(task)),
        )

    @staticmethod
    def _write_result(c: sqlite3.Connection, task: Task) -> None:
        r = task.result
        if r is None:
            return
        u = r.usage
        c.execute(
            "INSERT OR REPLACE INTO usage (task_id, agent_type, session_id, prompt_tokens, "
            "completion_tokens, cost_usd, model, calls) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.task_id,
                task.agent_type,
                task.session_id,
                u.prompt_tokens,
                u.completion_tokens,
                u.cost_usd,
                u.model,
                u.calls,
            ),
        )
        if r.artifacts:
            c.executemany(
                "INSERT OR REPLACE INTO artifacts (task_id, path, size, sha256, kind) VALUES (?, ?, ?, ?, ?)",
                [(task.task_id, a.path, a.size, a.sha256, a.kind) for a in r.artifacts],
            )

    def get_task(self, task_id: str) -> Task | None:
        rows = self._read(f"read task {task_id}", _TASK_SELECT + " WHERE task_id = ?", (task_id,))
        return _task_from_row(rows[0]) if rows else None

    def list_tasks(
        self,
        limit: int = 50,
        session_id: str = "",
        include_children: bool = False,
        owner: str | None = None,
    ) -> list[Task]:
        where, params = [], []
        if session_id:
            where.append("session_id = ?")
            params.append(session_id)
        if owner is not None:
            where.append("submitted_by = ?")
            params.append(owner)
        if not include_children:
            where.append("parent_task_id = ''")
        sql = _TASK_SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_ms DESC, rowid DESC LIMIT ?"
        rows = self._read("list tasks", sql, (*params, limit))
        return [_task_from_row(r) for r in rows]

    def children(self, task_id: str) -> list[Task]:
        rows = self._read(
            f"read children of task {task_id}",
            _TASK_SELECT + " WHERE parent_task_id = ? ORDER BY created_ms, rowid",
            (task_id,),
        )
        return [_task_from_row(r) for r in rows]

    def unfinished_tasks(self) -> list[Task]:
        rows = self._read(
            "list unfinished tasks",
            _TASK_SELECT + " WHERE finished = 0 ORDER BY created_ms, rowid",
        )
        return [_task_from_row(r) for r in rows]

    # ---- events
    def append_events(self, events: list[TaskEvent]) -> None:
        """Store a batch in one transaction. An event whose (task_id, seq) is stored
        already (a replay) is skipped. An event with seq <= 0 gets the task's next
        seq (set on the event object)."""
        if not events:
            return
        with self._tx(f"append {len(events)} events") as c:
            nxt: dict[str, int] = {}
            for e in events:
                if e.seq <= 0:
                    if e.task_id not in nxt:
                        row = c.execute(
                            "SELECT coalesce(max(seq), 0) FROM task_events WHERE task_id = ?",
                            (e.task_id,),
                        ).fetchone()
                        nxt[e.task_id] = int(row[0])
                    nxt[e.task_id] += 1
                    e.seq = nxt[e.task_id]
                elif e.task_id in nxt:
                    nxt[e.task_id] = max(nxt[e.task_id], e.seq)
            try:
                c.executemany(
                    "INSERT OR IGNORE INTO task_events (task_id, seq, kind, ts_ms, payload) VALUES (?, ?, ?, ?, ?)",
                    [(e.task_id, e.seq, str(e.kind), e.ts_ms, _event_payload(e)) for e in events],
                )
            except sqlite3.IntegrityError as exc:
                unknown = self._unknown_tasks(c, {e.task_id for e in events})
                if unknown:
                    raise sqlite3.IntegrityError(
                        f"{exc}: events for unknown task(s) {', '.join(sorted(unknown))}"
                    ) from exc
                raise
            arts = [(e.task_id, e.artifact) for e in events if e.artifact is not None]
            if arts:
                c.executemany(
                    "INSERT OR REPLACE INTO artifacts (task_id, path, size, sha256, kind) VALUES (?, ?, ?, ?, ?)",
                    [(t, a.path, a.size, a.sha256, a.kind) for t, a in arts],
                )

    @staticmethod
    def _unknown_tasks(c: sqlite3.Connection, ids: set[str]) -> set[str]:
        return {i for i in ids if c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (i,)).fetchone() is None}

    def events(self, task_id: str, after_seq: int = 0, limit: int | None = None) -> list[TaskEvent]:
        rows = self._read(
            f"read events of task {task_id}",
            "SELECT task_id, seq, kind, ts_ms, payload FROM task_events "
            "WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (task_id, after_seq, -1 if limit is None else limit),
        )
        return [_event_from_row(*r) for r in rows]

    def last_seq(self, task_id: str) -> int:
        rows = self._read(
            f"read last seq of task {task_id}",
            "SELECT coalesce(max(seq), 0) FROM task_events WHERE task_id = ?",
            (task_id,),
        )
        return int(rows[0][0])
