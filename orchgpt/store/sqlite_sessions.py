"""The SQLite store's sessions, agents seen, IAC message log and artifact index (part of
sqlite.SqliteStore)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, StoreError
from ..models import (
    AgentInfo,
    AgentState,
    Artifact,
    SessionInfo,
    Usage,
    now_ms,
)
from .sqlite_rows import _dumps


class SqliteSessions:
    """Sessions (summary, list, publish), the agents seen, the message log, the artifacts."""

    if TYPE_CHECKING:  # provided by sqlite.SqliteStore
        path: Path

        @contextmanager
        def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]: ...
        def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    # ---- agents
    def agent_seen(self, info: AgentInfo) -> None:
        t = now_ms()
        with self._tx(f"record agent {info.agent_id}") as c:
            c.execute(
                "INSERT INTO agents_seen (agent_id, agent_type, capabilities, host, state, "
                "current_task, last_heartbeat_ms, local, connected_ms, first_seen_ms, "
                "last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET agent_type = excluded.agent_type, "
                "capabilities = excluded.capabilities, host = excluded.host, "
                "state = excluded.state, current_task = excluded.current_task, "
                "last_heartbeat_ms = excluded.last_heartbeat_ms, local = excluded.local, "
                "connected_ms = excluded.connected_ms, last_seen_ms = excluded.last_seen_ms",
                (
                    info.agent_id,
                    info.agent_type,
                    _dumps(list(info.capabilities)),
                    info.host,
                    str(info.state),
                    info.current_task,
                    info.last_heartbeat_ms,
                    int(info.local),
                    info.connected_ms,
                    t,
                    t,
                ),
            )

    def agents_seen(self, limit: int = 100) -> list[AgentInfo]:
        """Beyond the interface: the agents ever seen, most recently seen first."""
        rows = self._read(
            "list agents seen",
            "SELECT agent_id, agent_type, capabilities, host, state, current_task, "
            "last_heartbeat_ms, local, connected_ms FROM agents_seen "
            "ORDER BY last_seen_ms DESC LIMIT ?",
            (limit,),
        )
        return [
            AgentInfo(
                agent_id=r[0],
                agent_type=r[1],
                capabilities=json.loads(r[2]),
                host=r[3],
                state=AgentState(r[4]) if r[4] in AgentState._value2member_map_ else AgentState.LOST,
                current_task=r[5],
                last_heartbeat_ms=r[6],
                local=bool(r[7]),
                connected_ms=r[8],
            )
            for r in rows
        ]

    # ---- IAC message log and artifacts (beyond the interface)
    def record_messages(self, messages: list[dict[str, Any]]) -> None:
        """Log IAC envelope metadata, one transaction per batch. Each dict has ``id``
        and ``type`` and optionally ``sender``, ``recipient``, ``task_id``,
        ``session_id``, ``correlation_id``, ``ts_ms``. A message id stored already
        is skipped."""
        if not messages:
            return
        rows = []
        for m in messages:
            if not m.get("id") or not m.get("type"):
                raise StoreError(f"store {self.path}: a message needs an id and a type: {m!r}")
            rows.append(
                (
                    str(m["id"]),
                    str(m["type"]),
                    str(m.get("sender", "")),
                    str(m.get("recipient", "")),
                    str(m.get("task_id", "")),
                    str(m.get("session_id", "")),
                    str(m.get("correlation_id", "")),
                    int(m.get("ts_ms") or m.get("timestamp_ms") or now_ms()),
                )
            )
        with self._tx(f"record {len(rows)} messages") as c:
            c.executemany(
                "INSERT OR IGNORE INTO messages (id, type, sender, recipient, task_id, "
                "session_id, correlation_id, ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def messages(self, task_id: str = "", session_id: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """The logged IAC messages of a task or a session, oldest first."""
        col, val = ("task_id", task_id) if task_id else ("session_id", session_id)
        rows = self._read(
            "read messages",
            "SELECT id, type, sender, recipient, task_id, session_id, correlation_id, ts_ms "
            f"FROM messages WHERE {col} = ? ORDER BY ts_ms, rowid LIMIT ?",
            (val, limit),
        )
        keys = ("id", "type", "sender", "recipient", "task_id", "session_id", "correlation_id", "ts_ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def artifacts(self, task_id: str) -> list[Artifact]:
        """The artifact index of a task (from its ARTIFACT events and its result)."""
        rows = self._read(
            f"read artifacts of task {task_id}",
            "SELECT path, size, sha256, kind FROM artifacts WHERE task_id = ? ORDER BY path",
            (task_id,),
        )
        return [Artifact(path=r[0], size=r[1], sha256=r[2], kind=r[3]) for r in rows]

    # ---- sessions
    def _sessions(self, where: str, params: tuple[Any, ...], limit: int) -> list[SessionInfo]:
        rows = self._read(
            "read sessions",
            "SELECT s.session_id, s.created_ms, s.updated_ms, s.title, s.published, s.tags, "
            "(SELECT count(*) FROM tasks t WHERE t.session_id = s.session_id "
            "   AND t.parent_task_id = ''), "
            "(SELECT count(*) FROM task_events e JOIN tasks t ON e.task_id = t.task_id "
            "   WHERE t.session_id = s.session_id) "
            f"FROM sessions s {where} ORDER BY s.updated_ms DESC, s.rowid DESC LIMIT ?",
            (*params, limit),
        )
        out = []
        for sid, created, updated, title, published, tags, n_tasks, n_msgs in rows:
            s = SessionInfo(
                session_id=sid,
                created_ms=created,
                updated_ms=updated,
                task_count=n_tasks,
                message_count=n_msgs,
                published=bool(published),
                tags=json.loads(tags),
                title=title,
            )
            for agent_type, p, cpl, cost, model, calls in self._read(
                f"read usage of session {sid}",
                "SELECT agent_type, sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), "
                "max(model), sum(calls) FROM usage WHERE session_id = ? GROUP BY agent_type "
                "ORDER BY agent_type",
                (sid,),
            ):
                u = Usage(prompt_tokens=p, completion_tokens=cpl, cost_usd=cost, model=model or "", calls=calls)
                s.usage_by_agent[agent_type] = u
                s.usage.add(u)
            out.append(s)
        return out

    def list_sessions(
        self, limit: int = 50, published_only: bool = False, owner: str | None = None
    ) -> list[SessionInfo]:
        where, params = [], []
        if published_only:
            where.append("s.published = 1")
        if owner is not None:
            where.append("EXISTS (SELECT 1 FROM tasks o WHERE o.session_id = s.session_id AND o.submitted_by = ?)")
            params.append(owner)
        return self._sessions(f"WHERE {' AND '.join(where)}" if where else "", tuple(params), limit)

    def get_session(self, session_id: str) -> SessionInfo | None:
        found = self._sessions("WHERE s.session_id = ?", (session_id,), 1)
        return found[0] if found else None

    def publish_session(self, session_id: str, tags: list[str]) -> SessionInfo:
        with self._tx(f"publish session {session_id}") as c:
            cur = c.execute(
                "UPDATE sessions SET published = 1, published_ms = ?, tags = ? WHERE session_id = ?",
                (now_ms(), _dumps(list(tags)), session_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"store {self.path}: no session {session_id!r} to publish", ErrorCode.NOT_FOUND)
        s = self.get_session(session_id)
        assert s is not None
        return s
