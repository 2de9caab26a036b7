"""The durable store: one SQLite file in the data directory.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. Without
group commit every call that changes a task (``create_task``, ``save_task``)
commits before it returns; with it (``commit_window_ms`` > 0, the daemon's
default: store/group_commit.py) the writes of a short window share one commit,
and every answer that depends on one waits for that commit (orchgpt/durable.py).
Once committed, a change survives the orchestrator being killed
(SIGKILL, OOM, a crash): the WAL is in the OS page cache and is replayed at the
next open. It is *not* guaranteed to survive a power loss or kernel crash (the
last transactions may roll back, the file stays consistent); pass
``synchronous="FULL"`` to fsync at every commit for that.

Events (token deltas and the like) are high volume: ``append_events`` writes a
whole batch with one ``executemany`` in one transaction.

Parts: sqlite_tasks.py (tasks and events), sqlite_sessions.py (sessions, agents seen,
message log, artifacts), sqlite_rows.py (rows and JSON columns); here the connection,
its durability settings, health checks and transactions.

Errors: anything SQLite refuses (missing directory, corrupt file, read-only
file, full disk or quota) raises ``StoreError`` naming the file and the cause,
at open and at the failing write; the transaction is rolled back.

The orchestrator calls the store synchronously from its event loop; the
connection may also be used from other threads (a lock serialises calls).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import logs
from ..errors import StoreError
from ..models import now_ms
from .base import Store
from .group_commit import GroupCommit, rollback_quietly
from .migrations import LATEST, SchemaTooNew, migrate, schema_version
from .push_configs import SqlitePushConfigs
from .schedules import SqliteSchedules
from .sqlite_graphs import SqliteGraphs
from .sqlite_rows import _TASK_COLUMNS, _TASK_INSERT, _task_from_row, _task_row  # noqa: F401  (re-exported)
from .sqlite_sessions import SqliteSessions
from .sqlite_tasks import SqliteTasks
from .sqlite_transcript import SqliteTranscript

log = logs.get("orchgpt.store")

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


# row <-> model conversion: sqlite_rows.py

# ---- the store ----------------------------------------------------------------------


class SqliteStore(
    SqliteTasks, SqliteSessions, SqliteTranscript, SqliteGraphs, SqliteSchedules, SqlitePushConfigs, Store
):
    """Tasks, events, sessions, usage, artifacts, IAC message log and agents in one file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        max_size_bytes: int | None = None,
        commit_window_ms: float = 0.0,
    ) -> None:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        ``max_size_bytes`` caps the database size: a write that would grow it past
        the cap fails with StoreError ("database or disk is full") like a full disk.
        ``commit_window_ms`` > 0: group commit (store/group_commit.py); 0: a commit per write.
        """
        self.path = Path(path).expanduser().absolute()
        self._lock = threading.RLock()
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"store {self.path}: unknown synchronous mode {synchronous!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot open store {self.path}: cannot create directory {self.path.parent}: {exc.strerror or exc}"
            ) from exc
        if self.path.is_dir():
            raise StoreError(f"cannot open store {self.path}: it is a directory")
        self.on_fault: Callable[[str], None] | None = None  # told when a write is refused
        self._identity: tuple[int, int] | None = None
        self._failing = False  # the last write failed
        self._group = GroupCommit(self, commit_window_ms) if commit_window_ms > 0 else None
        _make_private(self.path)
        try:
            self._conn = sqlite3.connect(
                str(self.path),
                isolation_level=None,
                check_same_thread=False,
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
            why = (
                "was deleted (or its directory removed)"
                if isinstance(exc, FileNotFoundError)
                else f"cannot be checked ({exc.strerror or exc})"
            )
            raise StoreError(self._gone(why)) from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(self._gone("was replaced by another file"))

    def _gone(self, why: str) -> str:
        return (
            f"store {self.path} {why} while orchgpt had it open: whatever is written now "
            "would be lost at the next start; restart orchgpt (or restore the file)"
        )

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
            raise StoreError(
                f"store {self.path}: the disk holding it has only "
                f"{st.f_bavail * st.f_frsize} bytes free (the disk is full)"
            )
        with self._tx("probe", quiet=True) as c:
            c.execute(
                "INSERT INTO store_meta (key, value) VALUES ('last_probe_ms', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(now_ms()),),
            )
        self.commit_now()

    def commit_now(self) -> None:
        """Commit the open group-commit window, if any (StoreError when that fails)."""
        if self._group is not None:
            error = self._group.commit()
            if error is not None:
                raise error

    def relax(self) -> None:
        if self._group is not None:
            self._group.relax()

    @property
    def group_commit(self) -> GroupCommit | None:
        """The group committer (None: a commit per write)."""
        return self._group

    def _fault(self, what: str, message: str) -> None:
        # an error line when writes start failing; while they keep failing, debug lines only
        (log.debug if self._failing else log.error)("store.write_failed", path=str(self.path), what=what, error=message)
        self._failing = True
        if self.on_fault is not None:
            try:
                self.on_fault(message)
            except Exception as exc:  # the store's caller must still get its StoreError
                log.warning("store.on_fault_failed", error=str(exc))

    def _failed(self, what: str, exc: sqlite3.Error) -> str:
        return f"store {self.path}: {what} failed: {_cause(exc)}"

    def _recovered(self, what: str) -> None:
        if self._failing:
            self._failing = False
            log.info("store.writable_again", path=str(self.path), what=what)

    @contextmanager
    def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits on exit, rolls back and raises StoreError on error
        (logged and told to ``on_fault`` unless ``quiet``). With group commit, on the event
        loop: one write of the open window, committed a moment later (store/group_commit.py)."""
        g = self._group
        with self._lock:
            if g is not None:
                if g.usable():
                    with g.write(what, quiet) as c:
                        yield c
                    return
                if g.open:  # from another thread, or with no loop: the window goes first
                    g.commit()
            c = self._conn
            self._checked(what, quiet)
            try:
                c.execute("BEGIN IMMEDIATE")
                yield c
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                rollback_quietly(c)
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
            if self._group is not None:
                self._group.commit()  # an error is logged and told to the window's waiters
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: close failed: {_cause(exc)}") from exc
