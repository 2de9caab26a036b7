"""The PostgreSQL store's SQL dialect (the shared SQLite statements, translated) and its group
commit's side of the store (part of postgres.PostgresStore): the hot writes queued for the
writer thread, the writes run on the calling thread inside the open window (store/pg_group.py)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import OrchgptError, StoreError
from ..models import AgentInfo, SessionMessage, Task
from .pg_group import PgGroupCommit
from .sqlite_sessions import SqliteSessions
from .sqlite_tasks import SqliteTasks
from .sqlite_transcript import SqliteTranscript


def _pg(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the shared SQL has no other ? or %)."""
    return sql.replace("?", "%s")


def _translate(sql: str) -> str:
    """The SQLite spellings used by the shared store code, in PostgreSQL."""
    sql = sql.replace("INSERT OR IGNORE INTO task_events", "INSERT INTO task_events")
    if "INSERT INTO task_events" in sql:
        sql += " ON CONFLICT (task_id, seq) DO NOTHING"
    if sql.startswith("INSERT OR IGNORE INTO messages"):
        sql = sql.replace("INSERT OR IGNORE", "INSERT") + " ON CONFLICT (id) DO NOTHING"
    if sql.startswith("INSERT OR REPLACE INTO usage"):
        sql = sql.replace("INSERT OR REPLACE", "INSERT") + (
            " ON CONFLICT (task_id, agent_type) DO UPDATE SET session_id = excluded.session_id, "
            "prompt_tokens = excluded.prompt_tokens, "
            "completion_tokens = excluded.completion_tokens, cost_usd = excluded.cost_usd, "
            "model = excluded.model, calls = excluded.calls"
        )
    if sql.startswith("INSERT OR REPLACE INTO artifacts"):
        sql = sql.replace("INSERT OR REPLACE", "INSERT") + (
            " ON CONFLICT (task_id, path) DO UPDATE SET size = excluded.size, "
            "sha256 = excluded.sha256, kind = excluded.kind"
        )
    if sql.startswith("INSERT INTO sessions"):  # _touch_session: min/max of two values
        sql = (
            sql.replace("min(created_ms,", "least(sessions.created_ms,")
            .replace("max(updated_ms,", "greatest(sessions.updated_ms,")
            .replace(
                "WHEN title = '' THEN excluded.title ELSE title END",
                "WHEN sessions.title = '' THEN excluded.title ELSE sessions.title END",
            )
        )
    sql = sql.replace(
        "sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), max(model), sum(calls)",
        "sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, "
        "sum(cost_usd)::float8, max(model), sum(calls)::bigint",
    )
    return _pg(sql)


class _Cursor:
    """What the shared store code calls on a SQLite connection, on a psycopg one."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self._conn.execute(_translate(sql), tuple(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_translate(sql), rows)


class _Refused(OrchgptError):
    """A write refused with a reason of our own (rolled back, reported as StoreError)."""


class PostgresGrouped:
    """Group commit's entry points in the PostgreSQL store."""

    if TYPE_CHECKING:  # provided by postgres.PostgresStore
        _group: PgGroupCommit | None
        _lock: threading.RLock
        events_stored: Callable[[dict[str, int]], None] | None

        def _fault(self, what: str, message: str) -> None: ...
        def _failed(self, what: str, exc: BaseException) -> str: ...

    # ---- group commit (store/pg_group.py)
    @property
    def group_commit(self) -> PgGroupCommit | None:
        return self._group

    def relax(self) -> None:
        if self._group is not None:
            self._group.relax()

    def commit_now(self) -> None:
        """Commit what is written so far, now (StoreError when that fails)."""
        g = self._group
        if g is None:
            return
        if g.usable():
            g.commit()  # the window's future is settled by the writer thread
        with self._lock:
            error = g.flush()
        if error is not None:
            raise error

    def commit_each_write(self) -> None:
        """Group commit off (the cluster: its writes commit before they return, as it expects)."""
        g = self._group
        if g is None:
            return
        g.stop()
        with self._lock:
            g.flush()
            self._group = None

    def _deferred(self) -> PgGroupCommit | None:
        """The committer when a hot write may be queued for the writer thread (on the loop)."""
        g = self._group
        return g if g is not None and self.events_stored is None and g.usable() else None

    @contextmanager
    def _grouped_tx(self, g: PgGroupCommit, what: str, quiet: bool) -> Iterator[Any]:
        """A write on the calling thread, after the queued ones, in the open transaction: on the
        loop it joins the open window; elsewhere it commits before it returns."""
        g.run_jobs()
        on_loop = g.usable()
        try:
            conn = g.begin()
        except StoreError as exc:
            if not quiet:
                self._fault(what, str(exc))
            raise
        try:
            g.savepoint(conn)  # what ran before stands if this write fails
            yield _Cursor(conn)
        except BaseException as exc:
            if conn.broken:
                g.lose()
            else:
                g.recover(conn)  # its statements that ran are rolled back; the queued writes run again
            if not _store_error(exc):
                raise
            message = self._failed(what, exc)
            if not quiet:
                self._fault(what, message)
            raise StoreError(message) from exc
        if on_loop:
            g.join_inline()
        else:
            error = g.commit_open()
            if error is not None:
                raise error

    @property
    def me(self) -> Any:
        """This store, as the shared SQL's mixins (sqlite_tasks.py, sqlite_sessions.py) see it."""
        return self

    # the hot writes: queued for the writer thread on the loop with group commit (their callers
    # only log a StoreError; the writer logs it and tells on_fault)
    def add_session_messages(self, messages: list[SessionMessage]) -> None:
        g = self._deferred()
        if g is None:
            return SqliteTranscript.add_session_messages(self.me, messages)
        if messages:
            msgs = list(messages)
            g.defer(
                f"record {len(msgs)} session messages", lambda: SqliteTranscript.add_session_messages(self.me, msgs)
            )

    def save_task(self, task: Task) -> None:
        g = self._deferred()
        if g is None:
            return SqliteTasks.save_task(self.me, task)
        snap = copy.copy(task)  # the row as it is now: the loop goes on changing the task
        g.defer(f"save task {task.task_id}", lambda: SqliteTasks.save_task(self.me, snap))

    def agent_seen(self, info: AgentInfo) -> None:
        g = self._deferred()
        if g is None:
            return SqliteSessions.agent_seen(self.me, info)
        snap = copy.copy(info)
        g.defer(f"record agent {info.agent_id}", lambda: SqliteSessions.agent_seen(self.me, snap))

    def record_messages(self, messages: list[dict[str, Any]]) -> None:
        g = self._deferred()
        if g is None or not all(m.get("id") and m.get("type") for m in messages):
            return SqliteSessions.record_messages(self.me, messages)  # (a malformed message raises at once)
        if messages:
            msgs = list(messages)
            g.defer(f"record {len(msgs)} messages", lambda: SqliteSessions.record_messages(self.me, msgs))


def _store_error(exc: BaseException) -> bool:
    """True for what a write reports as StoreError (the server's or the connection's refusal)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return isinstance(exc, _Refused)
    return isinstance(exc, (psycopg.Error, _Refused))
