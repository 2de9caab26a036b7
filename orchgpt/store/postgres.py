"""The store on PostgreSQL (issue 19, first step: one daemon, no clustering yet).

The same interface, rows and JSON as the SQLite store (sqlite_rows.py: the task columns
and statements are shared; the JSON columns stay TEXT so both backends hold one shape),
and the same versioned migrations (migrations.py, ``postgres_sql``), applied under an
advisory lock so that two daemons starting together migrate once. The version lives in
the table ``orchgpt_schema``.

Synchronous psycopg 3 on one autocommit connection, serialised by a lock, like the
SQLite store. Without group commit every write is one transaction that commits before the
call returns (PostgreSQL's own durability: ``synchronous_commit`` on). With it
(``commit_window_ms`` > 0, the daemon's default; store/pg_group.py) a writer thread runs the
hot writes and one COMMIT per window off the event loop, and every answer waits for the commit
that holds its change (orchgpt/durable.py), so that the daemon answers only what is committed.
A dropped connection is replaced: a transaction that failed at its BEGIN and a read are
retried once on the new one. The cluster's background work (leases, claims, LISTEN, event
following) has its own async pool: cluster_db.py; a cluster's store commits every write.

Errors: anything the server or the connection refuses raises StoreError naming the
(password-masked) URL and the cause; the transaction is rolled back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

from .. import logs
from ..errors import StoreError
from ..models import TaskEvent, now_ms
from . import redact_url
from .base import Store
from .migrations import LATEST, MIGRATIONS, postgres_sql
from .pg_group import PgGroupCommit
from .postgres_grouped import PostgresGrouped, _Cursor, _Refused, _translate
from .postgres_grouped import _pg as _pg  # re-exported (cluster_db.py)
from .push_configs import SqlitePushConfigs
from .schedules import SqliteSchedules
from .sqlite_graphs import SqliteGraphs
from .sqlite_rows import _event_payload
from .sqlite_sessions import SqliteSessions
from .sqlite_tasks import SqliteTasks
from .sqlite_transcript import SqliteTranscript

try:
    import psycopg
except ImportError:  # pragma: no cover - the optional extra is missing
    psycopg = None  # type: ignore[assignment]

log = logs.get("orchgpt.store")

_MIGRATION_LOCK = 0x6F726368  # "orch": the advisory lock held while migrating


class PostgresStore(
    PostgresGrouped,
    SqliteTasks,
    SqliteSessions,
    SqliteTranscript,
    SqliteGraphs,
    SqliteSchedules,
    SqlitePushConfigs,
    Store,
):
    """The SQLite store's tables in a PostgreSQL database."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10, commit_window_ms: float = 0.0) -> None:
        self.url = url
        self.path = redact_url(url)  # type: ignore[assignment]  # a label here: the URL without its password
        self._lock = threading.RLock()
        self.on_fault: Callable[[str], None] | None = None
        self._failing = False
        # --cluster: told each committed batch's last seq per task (orchgpt/cluster.py: it NOTIFYs
        # orchgpt_events outside this transaction, so that its commit holds no NOTIFY lock)
        self.events_stored: Callable[[dict[str, int]], None] | None = None
        if psycopg is None:
            raise StoreError(f"store {self.path}: PostgreSQL needs psycopg: pip install 'orchgpt[postgres]'")
        self._closed = False
        try:
            self._conn = self._connect(connect_timeout_s)
        except Exception as exc:  # psycopg.Error, or a malformed URL (ProgrammingError)
            raise StoreError(f"cannot open store {self.path}: {_cause(exc, url)}") from None
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise
        self._group = PgGroupCommit(self, commit_window_ms) if commit_window_ms > 0 else None

    def _connect(self, timeout_s: int) -> Any:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=timeout_s, application_name="orchgpt")

    def _live(self) -> Any:
        """The connection; a new one when the server dropped the old one (a restart, a
        failover, an administrator's pg_terminate_backend). Only what cannot have run is
        retried (``_begin``, ``_read``)."""
        if self._closed:
            raise StoreError(f"store {self.path}: the store is closed")
        if self._conn.closed or self._conn.broken:
            g = getattr(self, "_group", None)
            if g is not None:
                g.lose()  # the writes of its open transaction went with it
            try:
                self._conn.close()
                self._conn = self._connect(2)  # short: the daemon's loop waits for it
            except psycopg.Error as exc:
                raise StoreError(
                    f"store {self.path}: cannot reconnect to PostgreSQL: {_cause(exc, self.url)}"
                ) from None
            log.info("store.reconnected", url=self.path)
        return self._conn

    # ---- schema
    def _setup(self) -> None:
        c = self._conn
        try:
            c.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                c.execute("CREATE TABLE IF NOT EXISTS orchgpt_schema (version BIGINT NOT NULL)")
                before = self.schema_version()
                if before > LATEST:
                    raise StoreError(
                        f"cannot open store {self.path}: schema version {before} is newer than "
                        f"this orchgpt supports ({LATEST}); upgrade orchgpt"
                    )
                for m in MIGRATIONS:
                    if m.version <= before:
                        continue
                    with c.transaction():
                        c.execute(postgres_sql(m))
                        c.execute("DELETE FROM orchgpt_schema")
                        c.execute("INSERT INTO orchgpt_schema (version) VALUES (%s)", (m.version,))
            finally:
                c.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
            c.execute(
                "INSERT INTO store_meta (key, value) VALUES ('last_open_ms', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(now_ms()),),
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {_cause(exc, self.url)}") from None
        if before < LATEST:
            log.info("store.migrated", url=self.path, from_version=before, to_version=LATEST)
        log.debug("store.opened", url=self.path, schema_version=LATEST)

    def schema_version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM orchgpt_schema").fetchone()
        return int(row[0] or 0)

    # ---- plumbing (the shared task and session code calls _tx and _read)
    def check(self) -> None:
        """Cheap, no round trip: StoreError when the connection is known to be lost
        (the next write or ``probe`` reconnects)."""
        if self._conn.closed or self._conn.broken:
            raise StoreError(f"store {self.path}: the connection to PostgreSQL is lost")

    def probe(self) -> None:
        with self._tx("probe", quiet=True) as c:
            c.execute(
                "INSERT INTO store_meta (key, value) VALUES ('last_probe_ms', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(now_ms()),),
            )
        self.commit_now()

    def _failed(self, what: str, exc: BaseException) -> str:
        return f"store {self.path}: {what} failed: {_cause(exc, self.url)}"

    def _recovered(self, what: str) -> None:
        if self._failing:
            self._failing = False
            log.info("store.writable_again", url=self.path, what=what)

    def _fault(self, what: str, message: str) -> None:
        (log.debug if self._failing else log.error)("store.write_failed", url=self.path, what=what, error=message)
        self._failing = True
        if self.on_fault is not None:
            try:
                self.on_fault(message)
            except Exception as exc:
                log.warning("store.on_fault_failed", error=str(exc))

    def _begin(self, what: str, quiet: bool) -> tuple[Any, ExitStack]:
        """The connection with a transaction begun on it. A connection the server dropped
        fails at its first round trip (BEGIN: nothing ran yet), so that one is retried once
        on a new connection."""
        for attempt in (0, 1):
            try:
                conn = self._live()
            except StoreError as exc:
                if not quiet:
                    self._fault(what, str(exc))
                raise
            stack = ExitStack()
            try:
                stack.enter_context(conn.transaction())
                return conn, stack
            except psycopg.OperationalError as exc:
                if attempt or not conn.broken:
                    message = f"store {self.path}: {what} failed: {_cause(exc, self.url)}"
                    if not quiet:
                        self._fault(what, message)
                    raise StoreError(message) from exc
                log.info("store.connection_lost", url=self.path, what=what, error=_cause(exc, self.url))
        raise AssertionError("unreachable")

    @contextmanager
    def _tx(self, what: str, quiet: bool = False) -> Iterator[Any]:
        g = self._group
        if g is not None:
            if g.in_job == threading.get_ident():  # a queued write: the writer holds its savepoint
                yield _Cursor(self._conn)
                return
            with self._lock, self._grouped_tx(g, what, quiet) as c:
                yield c
            return
        with self._lock:
            conn, stack = self._begin(what, quiet)
            try:
                with stack:
                    yield _Cursor(conn)
            except (psycopg.Error, _Refused) as exc:
                message = f"store {self.path}: {what} failed: {_cause(exc, self.url)}"
                if not quiet:
                    self._fault(what, message)
                raise StoreError(message) from exc
            if self._failing:
                self._failing = False
                log.info("store.writable_again", url=self.path, what=what)

    def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        params = tuple(params)
        if "LIMIT ?" in sql and params and params[-1] == -1:
            params = (*params[:-1], None)  # SQLite's LIMIT -1 is PostgreSQL's LIMIT NULL
        g = self._group
        with self._lock:
            if g is not None and g.in_job != threading.get_ident():
                g.run_jobs()  # the read sees every write made before it
            for attempt in (0, 1):  # a read is repeated once on a new connection if the old one was dropped
                conn = self._live()
                try:
                    rows: list[tuple[Any, ...]] = conn.execute(_translate(sql), params).fetchall()
                    return rows
                except psycopg.Error as exc:
                    if (
                        g is not None
                        and not conn.broken
                        and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
                    ):
                        g.recover(conn)  # the open transaction is aborted: its queued writes run again
                    if attempt or not conn.broken:
                        raise StoreError(f"store {self.path}: {what} failed: {_cause(exc, self.url)}") from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        g = self._group
        if g is not None:
            g.stop()
        with self._lock:
            if g is not None and not self._closed:
                g.flush()  # an error is logged and told to on_fault
            self._closed = True
            self._conn.close()

    # ---- where PostgreSQL differs from the shared code (sqlite_tasks.py, sqlite_sessions.py:
    # their SQL reaches PostgreSQL through _Cursor and _translate)
    def append_events(self, events: list[TaskEvent]) -> None:
        if not events:
            return
        g = self._deferred()
        if g is not None and all(e.seq > 0 for e in events):  # (a seq to number is read back at once)
            evs = list(events)
            g.defer(f"append {len(evs)} events", lambda: self._append_events(evs))
            return
        self._append_events(events)
        if self.events_stored is not None:  # after the commit: the events are readable now
            last: dict[str, int] = {}
            for e in events:
                last[e.task_id] = max(last.get(e.task_id, 0), e.seq)
            self.events_stored(last)

    def _append_events(self, events: list[TaskEvent]) -> None:
        with self._tx(f"append {len(events)} events") as c:
            nxt: dict[str, int] = {}
            for e in events:
                if e.seq <= 0:
                    if e.task_id not in nxt:
                        row = c.execute(
                            "SELECT coalesce(max(seq), 0) FROM task_events WHERE task_id = ?", (e.task_id,)
                        ).fetchone()
                        nxt[e.task_id] = int(row[0])
                    nxt[e.task_id] += 1
                    e.seq = nxt[e.task_id]
                elif e.task_id in nxt:
                    nxt[e.task_id] = max(nxt[e.task_id], e.seq)
            g = self._group
            try:
                # a savepoint, so that the lookup below still runs (not for a queued write run with no
                # savepoint: its failure rolls the transaction back, it runs again in a savepoint)
                with nullcontext() if g is not None and g.fast else self._conn.transaction():
                    c.executemany(
                        "INSERT OR IGNORE INTO task_events (task_id, seq, kind, ts_ms, payload) VALUES (?, ?, ?, ?, ?)",
                        [(e.task_id, e.seq, str(e.kind), e.ts_ms, _event_payload(e)) for e in events],
                    )
            except psycopg.Error as exc:
                if exc.sqlstate != "23503":  # foreign_key_violation
                    raise
                unknown = sorted(
                    i
                    for i in {e.task_id for e in events}
                    if c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (i,)).fetchone() is None
                )
                first = str(exc).splitlines()[0]
                raise _Refused(f"events for unknown task(s) {', '.join(unknown)} ({first})") from exc
            arts = [(e.task_id, e.artifact) for e in events if e.artifact is not None]
            if arts:
                c.executemany(
                    "INSERT OR REPLACE INTO artifacts (task_id, path, size, sha256, kind) VALUES (?, ?, ?, ?, ?)",
                    [(t, a.path, a.size, a.sha256, a.kind) for t, a in arts],
                )


def _cause(exc: BaseException, url: str) -> str:
    """The error's text, first line, with the URL's password masked wherever it appears."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    msg = msg.replace(url, redact_url(url))
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(url).get("password")
    except Exception:
        password = None
    return msg.replace(str(password), "***") if password else msg
