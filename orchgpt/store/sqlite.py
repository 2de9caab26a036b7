"""The durable store: one SQLite file in the data directory.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. Every
call that changes a task (``create_task``, ``save_task``) commits before it
returns, so once it returns the change survives the orchestrator being killed
(SIGKILL, OOM, a crash): the WAL is in the OS page cache and is replayed at the
next open. It is *not* guaranteed to survive a power loss or kernel crash (the
last transactions may roll back, the file stays consistent); pass
``synchronous="FULL"`` to fsync at every commit for that.

Events (token deltas and the like) are high volume: ``append_events`` writes a
whole batch with one ``executemany`` in one transaction.

Errors: anything SQLite refuses (missing directory, corrupt file, read-only
file, full disk or quota) raises ``StoreError`` naming the file and the cause,
at open and at the failing write; the transaction is rolled back.

The orchestrator calls the store synchronously from its event loop; the
connection may also be used from other threads (a lock serialises calls).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import logs
from ..errors import StoreError
from ..models import (
    AgentInfo,
    AgentState,
    Artifact,
    SessionInfo,
    Task,
    TaskEvent,
    TaskResult,
    Usage,
    now_ms,
)
from ..wire import dicts
from .base import Store
from .migrations import LATEST, SchemaTooNew, migrate, schema_version

log = logs.get("orchgpt.store")

_TASK_COLUMNS = (
    "task_id", "agent_type", "action", "input", "language", "session_id", "parent_task_id",
    "approval", "options", "state", "agent_id", "attempts", "created_ms", "updated_ms",
    "result", "error", "submitted_by", "delegated_by", "inputs",
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
_HINTS = {
    "database or disk is full": "the disk or the store's size limit is full",
    "file is not a database": "the file is corrupt or not an orchgpt store",
    "database disk image is malformed": "the file is corrupt",
    "attempt to write a readonly database": "the file or its directory is read-only",
    "unable to open database file": "the file cannot be opened or created",
    "database is locked": "another process holds the store's write lock",
    "disk I/O error": "the file cannot be written: read-only, immutable, or a failing device",
    "readonly database": "the file or its directory is read-only",
}


def _tighten(path: Path) -> None:
    """Make an existing store file readable by its owner only (0600)."""
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("store.cannot_restrict_mode", path=str(path), error=str(exc))


def _make_private(path: Path) -> None:
    """Create the store file 0600 before SQLite does (its -wal and -shm copy its mode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # SQLite's own open reports the reason
    os.close(fd)
    _tighten(path)


def _cause(exc: BaseException) -> str:
    msg = str(exc)
    hint = next((h for k, h in _HINTS.items() if k in msg), "")
    return f"{msg} ({hint})" if hint else msg


# ---- row <-> model conversion -------------------------------------------------------


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


# ---- the store ----------------------------------------------------------------------


class SqliteStore(Store):
    """Tasks, events, sessions, usage, artifacts, IAC message log and agents in one file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        max_size_bytes: int | None = None,
    ) -> None:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        ``max_size_bytes`` caps the database size: a write that would grow it past
        the cap fails with StoreError ("database or disk is full") like a full disk.
        """
        self.path = Path(path).expanduser().absolute()
        self._lock = threading.RLock()
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"store {self.path}: unknown synchronous mode {synchronous!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot open store {self.path}: cannot create directory "
                f"{self.path.parent}: {exc.strerror or exc}"
            ) from exc
        if self.path.is_dir():
            raise StoreError(f"cannot open store {self.path}: it is a directory")
        self.on_fault: Callable[[str], None] | None = None  # told when a write is refused
        self._identity: tuple[int, int] | None = None
        self._failing = False  # the last write failed
        _make_private(self.path)
        try:
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {_cause(exc)}") from exc
        try:
            self._setup(synchronous.upper(), busy_timeout_ms, max_size_bytes)
            st = os.stat(self.path)
        except BaseException:
            self._conn.close()
            raise
        # The file this connection writes: every write checks that it is still the one at
        # self.path (a store deleted or replaced under the daemon would swallow the writes).
        self._identity = (st.st_dev, st.st_ino)
        for suffix in ("-wal", "-shm"):  # SQLite gives them the main file's mode; old ones too
            _tighten(Path(f"{self.path}{suffix}"))

    def _setup(self, synchronous: str, busy_timeout_ms: int, max_size_bytes: int | None) -> None:
        c = self._conn
        try:
            c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot open store {self.path}: WAL mode refused (got {mode})")
            c.execute(f"PRAGMA synchronous = {synchronous}")
            c.execute("PRAGMA foreign_keys = ON")
            if max_size_bytes is not None:
                page = int(c.execute("PRAGMA page_size").fetchone()[0])
                c.execute(f"PRAGMA max_page_count = {max(1, max_size_bytes // page)}")
            before = schema_version(c)
            applied = migrate(c)
            # A write at every open: a store that cannot be written fails now, not
            # at the first task.
            c.execute(
                "INSERT INTO store_meta (key, value) VALUES ('last_open_ms', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(now_ms()),),
            )
        except SchemaTooNew as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {_cause(exc)}") from exc
        if applied:
            log.info("store.migrated", path=str(self.path), from_version=before, to_version=LATEST)
        log.debug("store.opened", path=str(self.path), schema_version=LATEST)

    # ---- plumbing
    def check(self) -> None:
        """Raise StoreError unless the open file is still the one at the store's path.

        Cheap (one stat): called before and after every write transaction, so that
        nothing is acknowledged that went into a file nobody will ever open again.
        """
        if self._identity is None:
            return
        try:
            st = os.stat(self.path)
        except OSError as exc:
            why = "was deleted (or its directory removed)" if isinstance(exc, FileNotFoundError) \
                else f"cannot be checked ({exc.strerror or exc})"
            raise StoreError(self._gone(why)) from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(self._gone("was replaced by another file"))

    def _gone(self, why: str) -> str:
        return (f"store {self.path} {why} while orchgpt had it open: whatever is written now "
                "would be lost at the next start; restart orchgpt (or restore the file)")

    def probe(self, min_free_bytes: int = 1 << 20) -> None:
        """A real write (StoreError when refused): tells whether the store works again.

        After a full disk, a small write may fit in the space a failed large one left in
        the WAL: the probe also wants ``min_free_bytes`` free on the store's file system.
        """
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            st = None
        if st is not None and st.f_bavail * st.f_frsize < min_free_bytes:
            raise StoreError(f"store {self.path}: the disk holding it has only "
                             f"{st.f_bavail * st.f_frsize} bytes free (the disk is full)")
        with self._tx("probe", quiet=True) as c:
            c.execute(
                "INSERT INTO store_meta (key, value) VALUES ('last_probe_ms', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(now_ms()),),
            )

    def _fault(self, what: str, message: str) -> None:
        # an error line when writes start failing; while they keep failing, debug lines only
        (log.debug if self._failing else log.error)("store.write_failed", path=str(self.path), what=what,
                                                     error=message)
        self._failing = True
        if self.on_fault is not None:
            try:
                self.on_fault(message)
            except Exception as exc:  # the store's caller must still get its StoreError
                log.warning("store.on_fault_failed", error=str(exc))

    @contextmanager
    def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits on exit, rolls back and raises StoreError on error
        (logged and told to ``on_fault`` unless ``quiet``)."""
        with self._lock:
            c = self._conn
            self._checked(what, quiet)
            try:
                c.execute("BEGIN IMMEDIATE")
                yield c
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                if c.in_transaction:
                    try:
                        c.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                message = f"store {self.path}: {what} failed: {_cause(exc)}"
                if not quiet:
                    self._fault(what, message)
                raise StoreError(message) from exc
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            self._checked(what, quiet)  # committed, but into the file at the path? else refused
            if self._failing:
                self._failing = False
                log.info("store.writable_again", path=str(self.path), what=what)

    def _checked(self, what: str, quiet: bool = False) -> None:
        try:
            self.check()
        except StoreError as exc:
            if not quiet:
                self._fault(what, str(exc))
            raise

    def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {what} failed: {_cause(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: close failed: {_cause(exc)}") from exc

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
                (*(row[i] for i in _MUTABLE), task.task_id, task.session_id,
                 task.parent_task_id, task.created_ms),
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
            (task.session_id, task.created_ms, task.updated_ms,
             "" if task.parent_task_id else _title(task)),
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
            (task.task_id, task.agent_type, task.session_id, u.prompt_tokens,
             u.completion_tokens, u.cost_usd, u.model, u.calls),
        )
        if r.artifacts:
            c.executemany(
                "INSERT OR REPLACE INTO artifacts (task_id, path, size, sha256, kind) "
                "VALUES (?, ?, ?, ?, ?)",
                [(task.task_id, a.path, a.size, a.sha256, a.kind) for a in r.artifacts],
            )

    def get_task(self, task_id: str) -> Task | None:
        rows = self._read(f"read task {task_id}", _TASK_SELECT + " WHERE task_id = ?", (task_id,))
        return _task_from_row(rows[0]) if rows else None

    def list_tasks(
        self, limit: int = 50, session_id: str = "", include_children: bool = False,
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
            _TASK_SELECT + " WHERE parent_task_id = ? ORDER BY created_ms, rowid", (task_id,),
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
                    "INSERT OR IGNORE INTO task_events (task_id, seq, kind, ts_ms, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
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
                    "INSERT OR REPLACE INTO artifacts (task_id, path, size, sha256, kind) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(t, a.path, a.size, a.sha256, a.kind) for t, a in arts],
                )

    @staticmethod
    def _unknown_tasks(c: sqlite3.Connection, ids: set[str]) -> set[str]:
        return {i for i in ids if c.execute(
            "SELECT 1 FROM tasks WHERE task_id = ?", (i,)).fetchone() is None}

    def events(
        self, task_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[TaskEvent]:
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
            "SELECT coalesce(max(seq), 0) FROM task_events WHERE task_id = ?", (task_id,),
        )
        return int(rows[0][0])

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
                (info.agent_id, info.agent_type, _dumps(list(info.capabilities)), info.host,
                 str(info.state), info.current_task, info.last_heartbeat_ms, int(info.local),
                 info.connected_ms, t, t),
            )

    def agents_seen(self, limit: int = 100) -> list[AgentInfo]:
        """Beyond the interface: the agents ever seen, most recently seen first."""
        rows = self._read(
            "list agents seen",
            "SELECT agent_id, agent_type, capabilities, host, state, current_task, "
            "last_heartbeat_ms, local, connected_ms FROM agents_seen "
            "ORDER BY last_seen_ms DESC LIMIT ?", (limit,),
        )
        return [
            AgentInfo(agent_id=r[0], agent_type=r[1], capabilities=json.loads(r[2]), host=r[3],
                      state=AgentState(r[4]) if r[4] in AgentState._value2member_map_
                      else AgentState.LOST,
                      current_task=r[5], last_heartbeat_ms=r[6], local=bool(r[7]),
                      connected_ms=r[8])
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
            rows.append((
                str(m["id"]), str(m["type"]), str(m.get("sender", "")),
                str(m.get("recipient", "")), str(m.get("task_id", "")),
                str(m.get("session_id", "")), str(m.get("correlation_id", "")),
                int(m.get("ts_ms") or m.get("timestamp_ms") or now_ms()),
            ))
        with self._tx(f"record {len(rows)} messages") as c:
            c.executemany(
                "INSERT OR IGNORE INTO messages (id, type, sender, recipient, task_id, "
                "session_id, correlation_id, ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows,
            )

    def messages(self, task_id: str = "", session_id: str = "",
                 limit: int = 1000) -> list[dict[str, Any]]:
        """The logged IAC messages of a task or a session, oldest first."""
        col, val = ("task_id", task_id) if task_id else ("session_id", session_id)
        rows = self._read(
            "read messages",
            "SELECT id, type, sender, recipient, task_id, session_id, correlation_id, ts_ms "
            f"FROM messages WHERE {col} = ? ORDER BY ts_ms, rowid LIMIT ?", (val, limit),
        )
        keys = ("id", "type", "sender", "recipient", "task_id", "session_id",
                "correlation_id", "ts_ms")
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
            s = SessionInfo(session_id=sid, created_ms=created, updated_ms=updated,
                            task_count=n_tasks, message_count=n_msgs,
                            published=bool(published), tags=json.loads(tags), title=title)
            for agent_type, p, cpl, cost, model, calls in self._read(
                f"read usage of session {sid}",
                "SELECT agent_type, sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), "
                "max(model), sum(calls) FROM usage WHERE session_id = ? GROUP BY agent_type "
                "ORDER BY agent_type", (sid,),
            ):
                u = Usage(prompt_tokens=p, completion_tokens=cpl, cost_usd=cost,
                          model=model or "", calls=calls)
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
            where.append("EXISTS (SELECT 1 FROM tasks o WHERE o.session_id = s.session_id "
                         "AND o.submitted_by = ?)")
            params.append(owner)
        return self._sessions(f"WHERE {' AND '.join(where)}" if where else "", tuple(params), limit)

    def get_session(self, session_id: str) -> SessionInfo | None:
        found = self._sessions("WHERE s.session_id = ?", (session_id,), 1)
        return found[0] if found else None

    def publish_session(self, session_id: str, tags: list[str]) -> SessionInfo:
        with self._tx(f"publish session {session_id}") as c:
            cur = c.execute(
                "UPDATE sessions SET published = 1, published_ms = ?, tags = ? "
                "WHERE session_id = ?", (now_ms(), _dumps(list(tags)), session_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"store {self.path}: no session {session_id!r} to publish")
        s = self.get_session(session_id)
        assert s is not None
        return s
