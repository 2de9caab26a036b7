"""Session transcripts (session_messages) and the session operations (delete a message, clear
a session, delete a session): part of sqlite.SqliteStore and postgres.PostgresStore (the SQL
here is portable)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..models import SessionMessage

_COLS = "message_id, session_id, task_id, speaker, role, content, ts_ms, n"


def _message(r: tuple[Any, ...]) -> SessionMessage:
    return SessionMessage(
        message_id=r[0],
        session_id=r[1],
        task_id=r[2],
        speaker=r[3],
        role=r[4],
        content=r[5],
        ts_ms=int(r[6]),
        n=int(r[7]),
    )


class SqliteTranscript:
    if TYPE_CHECKING:  # provided by the store

        @contextmanager
        def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]: ...
        def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    def add_session_messages(self, messages: list[SessionMessage]) -> None:
        """Append messages; one whose id is stored already is skipped (a re-run after a crash)."""
        if not messages:
            return
        with self._tx(f"record {len(messages)} session messages") as c:
            for m in messages:
                c.execute(
                    f"INSERT INTO session_messages ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (message_id) DO NOTHING",
                    (
                        m.message_id,
                        m.session_id,
                        m.task_id,
                        m.speaker,
                        m.role,
                        m.content,
                        m.ts_ms,
                        m.n,
                    ),
                )

    def session_messages(self, session_id: str, limit: int = 1000) -> list[SessionMessage]:
        """The session's transcript, oldest first."""
        rows = self._read(
            f"read the messages of session {session_id}",
            f"SELECT {_COLS} FROM session_messages WHERE session_id = ? ORDER BY ts_ms, task_id, n LIMIT ?",
            (session_id, limit),
        )
        return [_message(r) for r in rows]

    def get_session_message(self, message_id: str) -> SessionMessage | None:
        rows = self._read(
            f"read message {message_id}",
            f"SELECT {_COLS} FROM session_messages WHERE message_id = ?",
            (message_id,),
        )
        return _message(rows[0]) if rows else None

    def delete_session_message(self, message_id: str) -> int:
        with self._tx(f"delete message {message_id}") as c:
            cur = c.execute("DELETE FROM session_messages WHERE message_id = ?", (message_id,))
            return int(cur.rowcount or 0)

    def clear_session(self, session_id: str) -> int:
        """Forget the session's transcript (its tasks stay listed)."""
        with self._tx(f"clear session {session_id}") as c:
            cur = c.execute("DELETE FROM session_messages WHERE session_id = ?", (session_id,))
            return int(cur.rowcount or 0)

    def delete_session(self, session_id: str) -> int:
        """Delete the session: its transcript, its tasks with their events, usage and artifact
        index, its IAC message log. Returns the messages and tasks removed."""
        with self._tx(f"delete session {session_id}") as c:
            n = int(c.execute("DELETE FROM session_messages WHERE session_id = ?", (session_id,)).rowcount or 0)
            ids = "SELECT task_id FROM tasks WHERE session_id = ?"
            for table in ("task_events", "usage", "artifacts", "artifact_files"):
                c.execute(f"DELETE FROM {table} WHERE task_id IN ({ids})", (session_id,))
            c.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            n += int(c.execute("DELETE FROM tasks WHERE session_id = ?", (session_id,)).rowcount or 0)
            c.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return n
