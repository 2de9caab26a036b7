"""Group commit for the PostgreSQL store (issue 17): the writes of many tasks, one transaction,
one commit, and no round trip on the event loop for the hot writes.

The SQLite store's windows (store/group_commit.py: when a window closes, ``relax()``, the
``ORCHGPT_COMMIT_WINDOW_HOLD`` switch, the window's future registered with orchgpt/durable.py
so that every answer waits for its commit) with a *writer thread* that owns the work on the
store's connection:

- a hot write made on the event loop (``defer``: a task's row, a batch of events, the message
  log, a transcript, an agent seen) is queued and returns at once; the writer thread runs it
  inside the open PostgreSQL transaction (a write that fails is rolled back alone: the others
  run again, each in a savepoint; it is logged as ``store.write_failed`` and told to the
  store's ``on_fault``, as its caller would have done with the StoreError: those callers only
  log it; a *vital* one fails its window: nothing that depends on it is acknowledged);
- when the loop closes a window it queues the window's *mark*; the writer thread sends one
  ``COMMIT`` for everything run so far and only then settles the window's future on the loop
  (the loop never waits for the round trip nor the fsync);
- any other call (a read, ``create_task``: Submit refuses what is not stored, a write whose
  caller needs its answer or error) runs
  on the calling thread, under the store's lock: it first runs the queued writes itself (so a
  read sees every write made before it, as on SQLite), then its own statement, inside the
  open transaction and the loop's open window. With no event loop (or from another thread) a
  write commits the open transaction before it returns (the old behaviour).

A failed ``COMMIT``, or a connection lost with writes in its open transaction, fails every
window that had a write in it: its answers are dropped and their streams end with UNAVAILABLE,
as on SQLite. Nothing is acknowledged before the commit that holds it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .. import durable, logs
from ..errors import StoreError
from .group_commit import MAX_WRITES, GroupCommit, resolve

log = logs.get("orchgpt.store")


_Job = tuple[str, Callable[[], None], bool, "asyncio.Future[None] | None", bool]  # what, job, quiet, window, vital


class _Owner(Protocol):
    """What the committer needs of postgres.PostgresStore."""

    _conn: Any
    _lock: threading.RLock
    path: Any

    def _live(self) -> Any: ...
    def _fault(self, what: str, message: str) -> None: ...
    def _failed(self, what: str, exc: BaseException) -> str: ...
    def _recovered(self, what: str) -> None: ...


class PgGroupCommit(GroupCommit):
    """The loop's open window (GroupCommit's rules) and the writer thread that commits it."""

    def __init__(self, owner: _Owner, window_ms: float, max_writes: int = MAX_WRITES) -> None:
        super().__init__(owner, window_ms, max_writes)  # type: ignore[arg-type]
        self.pg = owner
        self._jobs: deque[_Job] = deque()
        self._marks: deque[tuple[asyncio.Future[None], asyncio.AbstractEventLoop]] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._stop = False
        self._tx_windows: set[asyncio.Future[None]] = set()  # windows with a write in the open transaction
        self._dirty = 0  # writes in the open transaction
        self._doomed: dict[asyncio.Future[None], str] = {}  # windows whose writes were lost: why
        self.in_job = 0  # the thread running a queued write (the store's _tx then yields the connection as is)
        self.fast = False  # that write runs with no savepoint of its own
        self._ran: list[_Job] = []  # the queued writes run in the open transaction
        self._mark = False  # the savepoint "ok" is set in the open transaction: what is before it stands
        self._mark_due = False  # a write made on the calling thread since: set it again before the next
        self.transactions = 0  # COMMITs sent (tests, metrics)
        self.failed_writes = 0
        self._writer = threading.Thread(target=self._run, name="orchgpt-pg-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------ the loop's side
    def open_window(self) -> asyncio.Future[None]:
        """The open window's future (opened if needed); the caller is on ``self.loop``."""
        if self.future is not None:
            return self.future
        return self._open_future()

    def _joined(self) -> None:
        """One more write in the open window (the turn-by-turn rule, as GroupCommit.write)."""
        self.writes += 1
        if self.writes >= self.max_writes:
            self.commit()
        elif self._parked is not None:
            self._parked.cancel()
            self._parked = None
            assert self.loop is not None
            self.loop.call_soon(self._tick)

    def defer(self, what: str, job: Callable[[], None], quiet: bool = False, vital: bool = False) -> None:
        """Queue a write for the writer thread (the caller checked ``usable()``); ``vital``: when
        it fails, so does its window."""
        fut = self.open_window()
        with self._wake:
            self._jobs.append((what, job, quiet, fut, vital))
            self._wake.notify()
        self._joined()

    def join_inline(self) -> None:
        """A write run on the loop's thread joined the open window (the store's lock is held)."""
        fut = self.open_window()
        self._tx_windows.add(fut)
        self._dirty += 1
        self._mark_due = True
        self._joined()

    def commit(self) -> StoreError | None:
        """Close the open window: its mark goes to the writer thread, which settles its future
        after the COMMIT. Returns None (the outcome reaches the window's waiters)."""
        fut = self.future
        if fut is None:
            return None
        self.future = None
        for h in (self._timer, self._parked):
            if h is not None:
                h.cancel()
        self._timer = self._parked = None
        assert self.loop is not None
        with self._wake:
            self._marks.append((fut, self.loop))
            self._wake.notify()
        self.commits += 1
        return None

    # ------------------------------------------------------------ run under the store's lock
    def run_jobs(self) -> None:
        """Run every queued write in the open transaction (begun if needed). No savepoint each (two
        round trips a write): when one fails, ``recover`` rolls back and runs the others again."""
        while True:
            try:
                item = self._jobs.popleft()
            except IndexError:
                return
            self._run_job(item, fast=True)

    def _run_job(self, item: _Job, fast: bool) -> None:
        what, job, quiet, fut, vital = item
        try:
            conn = self.begin()
        except StoreError as exc:
            self._lost_write(what, str(exc), quiet, fut)
            return
        self.in_job = threading.get_ident()
        self.fast = fast
        try:
            if fast:
                if self._mark_due:
                    self.savepoint(conn)
                job()
            else:
                with conn.transaction():  # a savepoint: only this write is rolled back when it fails
                    job()
        except Exception as exc:  # psycopg.Error, the store's refusals, a bug in a row
            message = str(exc) if isinstance(exc, StoreError) else self.pg._failed(what, exc)
            self.in_job, self.fast = 0, False
            if fast and not conn.broken:  # the others again, then this one in a savepoint: its own error
                self.recover(conn)
                self._run_job(item, fast=False)
                return
            self.failed_writes += 1
            if conn.broken:
                self._lose_transaction(message)
            self._lost_write(what, message, quiet, fut if vital else None)
        else:
            self._ran.append(item)
            if fut is not None:
                self._tx_windows.add(fut)
            self._dirty += 1
        finally:
            self.in_job, self.fast = 0, False

    def savepoint(self, conn: Any) -> None:
        """Set the savepoint "ok" (one round trip): a failure after it rolls back to it, and only
        the queued writes run since run again. Set before and after a write made on the calling
        thread (that one cannot be run again)."""
        conn.execute("RELEASE SAVEPOINT ok; SAVEPOINT ok" if self._mark else "SAVEPOINT ok")
        self._mark, self._mark_due = True, False
        self._ran.clear()

    def recover(self, conn: Any) -> None:
        """A statement failed in the open transaction (PostgreSQL aborts all of it): roll back to
        the savepoint "ok" (or all of it) and run the queued writes since again, each in a
        savepoint of its own."""
        ran, self._ran = self._ran, []
        try:
            if self._mark:
                conn.execute("ROLLBACK TO SAVEPOINT ok")
            else:
                self._tx_windows.clear()
                self._dirty = 0
                conn.execute("ROLLBACK")
        except Exception as exc:  # the transaction is gone: so are its writes
            self._lose_transaction(self.pg._failed("rollback", exc))
            for item in ran:
                if item[3] is not None:
                    self._doomed.setdefault(item[3], self.pg._failed("rollback", exc))
            return
        for item in ran:
            self._run_job(item, fast=False)

    def _lost_write(self, what: str, message: str, quiet: bool, fut: asyncio.Future[None] | None) -> None:
        if fut is not None:
            self._doomed.setdefault(fut, message)
        if not quiet:
            self._fault(what, message)

    def _fault(self, what: str, message: str) -> None:
        """Tell the store's fault (its log line, its ``on_fault``: the daemon's health) on the loop's thread."""
        loop = self.loop
        if threading.get_ident() == self.thread or loop is None or loop.is_closed():
            self.pg._fault(what, message)
            return
        try:
            loop.call_soon_threadsafe(self.pg._fault, what, message)
        except RuntimeError:  # the loop closed meanwhile
            self.pg._fault(what, message)

    def begin(self) -> Any:
        """The connection with a transaction open on it (a dropped connection is replaced: the
        writes of its open transaction are lost, and so are their windows)."""
        import psycopg
        from psycopg import pq

        for attempt in (0, 1):
            c = self.pg._live()  # a new connection when the old one is known lost (see lose())
            if c.info.transaction_status != pq.TransactionStatus.IDLE:
                return c
            try:
                c.execute("BEGIN")
                return c
            except psycopg.Error as exc:  # nothing ran: retried once on a new connection
                if attempt or not c.broken:
                    raise StoreError(self.pg._failed("BEGIN", exc)) from None
        raise AssertionError("unreachable")

    def lose(self) -> None:
        """The connection is gone: so are the writes of its open transaction."""
        self._lose_transaction()

    def _lose_transaction(self, why: str = "") -> None:
        why = why or f"store {self.pg.path}: the connection to PostgreSQL was lost with the window's writes"
        for fut in self._tx_windows:
            self._doomed.setdefault(fut, why)
        self._tx_windows.clear()
        self._ran.clear()
        self._dirty = 0
        self._mark = self._mark_due = False

    def commit_open(self) -> StoreError | None:
        """COMMIT the open transaction (nothing when none is open); the windows it held are
        doomed when that fails."""
        from psycopg import pq

        c = self.pg._conn
        if c.closed or c.broken:
            lost = bool(self._dirty)
            self._lose_transaction()
            return StoreError(f"store {self.pg.path}: the connection to PostgreSQL is lost") if lost else None
        status = c.info.transaction_status
        if status == pq.TransactionStatus.IDLE:
            return None
        n = self._dirty
        what = f"commit of {n} write{'s' if n != 1 else ''}"
        error: StoreError | None = None
        try:
            if status != pq.TransactionStatus.INTRANS:  # aborted: COMMIT would roll back silently
                c.execute("ROLLBACK")
                error = StoreError(f"store {self.pg.path}: {what} failed: the transaction was aborted")
            else:
                c.execute("COMMIT")
        except Exception as exc:
            error = StoreError(self.pg._failed(what, exc))
        self.transactions += 1
        if error is not None:
            self._lose_transaction(str(error))
            self._fault(what, str(error))
            if c.info.transaction_status != pq.TransactionStatus.IDLE and not c.broken:
                try:
                    c.execute("ROLLBACK")
                except Exception:
                    pass
        else:
            self._tx_windows.clear()
            self._ran.clear()
            self._dirty = 0
            self._mark = self._mark_due = False
            self.pg._recovered(what)
        return error

    def flush(self) -> StoreError | None:
        """Run the queued writes and commit them now (the store's lock is held)."""
        self.run_jobs()
        return self.commit_open()

    # ------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._marks and not self._stop:
                    self._wake.wait()
                if self._stop and not self._jobs and not self._marks:
                    return
                marks = list(self._marks)  # taken first: their writes were queued before them
                self._marks.clear()
            try:
                with self.pg._lock:
                    self.run_jobs()
                    error = self.commit_open() if marks else None
            except BaseException as exc:  # never leave a window's waiters hanging
                log.error("store.writer_failed", error=str(exc))
                error = StoreError(f"store {self.pg.path}: the writer failed: {exc}")
            for fut, loop in marks:
                why = error
                lost = self._doomed.pop(fut, None)
                if why is None and lost is not None:
                    why = StoreError(lost)
                _settle(fut, loop, why)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Close the open window and let the writer thread finish what is queued."""
        if self.future is not None and self.loop is not None and not self.loop.is_closed():
            self.commit()
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout_s)


def _settle(fut: asyncio.Future[None], loop: asyncio.AbstractEventLoop, error: StoreError | None) -> None:
    def done() -> None:
        resolve(fut, error)

    if loop.is_closed():
        durable.closed(fut)
        return
    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:  # closed meanwhile
        durable.closed(fut)
