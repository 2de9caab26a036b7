"""Group commit for the SQLite store (issue 17): many writes, one transaction, one commit.

Without it (``window_ms`` 0) every store write is its own transaction, committed before the
call returns. With it, a write made on the event loop joins the *window*: one open
``BEGIN IMMEDIATE`` transaction on the store's connection, each write in a savepoint of its own
(a write that fails is rolled back alone and raises ``StoreError`` at once, as before). The
window is committed by one ``COMMIT``, then the file is checked (``SqliteStore.check``):

- when a turn of the event loop brought no new write (an idle daemon does not wait), unless
  every write of the window was *relaxed* (``relax()``: a task queued behind others, which no
  answer waits on at once; issue 17): such a window waits for its time, or for a write that may
  not wait, and so joins the next busy window instead of a commit of its own, or
- ``window_ms`` after its first write (a busy daemon gathers the writes of many tasks), or
- when ``max_writes`` writes have joined it.

"Committed before acknowledged" holds through the window's future, registered with
orchgpt/durable.py: every answer queued for a peer after a write waits for it (the wire's
``Outbox``, the wire guard), so nothing is acknowledged before the commit that holds it. A
failed commit rolls the whole window back, logs one line (``store.write_failed``, told to the
store's ``on_fault``) and fails the future with the ``StoreError``: every answer waiting on it is
dropped and its stream ends with UNAVAILABLE.

Reads on the same connection see the window's writes (SQLite: one connection, one transaction).
A write from another thread, or with no event loop running, commits the open window and itself
at once (the old behaviour). ``ORCHGPT_COMMIT_WINDOW_HOLD=1`` keeps every window open for its
whole length (tests and bench/crash_recovery.py: a SIGKILL inside a window).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from .. import durable, logs
from ..errors import StoreError

log = logs.get("orchgpt.store")

MAX_WRITES = 2000  # writes in one window before it is committed at once
HOLD_ENV = "ORCHGPT_COMMIT_WINDOW_HOLD"


def rollback_quietly(c: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any, after a failed statement or commit (a rollback
    that fails too leaves nothing to undo: SQLite already dropped the transaction)."""
    if c.in_transaction:
        try:
            c.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class _Owner(Protocol):
    """What the committer needs of sqlite.SqliteStore."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _checked(self, what: str, quiet: bool = False) -> None: ...
    def _fault(self, what: str, message: str) -> None: ...
    def _failed(self, what: str, exc: sqlite3.Error) -> str: ...
    def _recovered(self, what: str) -> None: ...


class GroupCommit:
    """The open window of one SQLite connection and its commit."""

    def __init__(self, owner: _Owner, window_ms: float, max_writes: int = MAX_WRITES) -> None:
        self.owner = owner
        self.window_s = window_ms / 1000
        self.max_writes = max_writes
        self.hold = os.environ.get(HOLD_ENV) == "1"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = 0
        self.future: asyncio.Future[None] | None = None  # the open window's; None: none open
        self.writes = 0  # joined the open window
        self._seen = 0  # writes at the last tick
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.relaxed = 0  # writes of the open window that may wait for its time
        self._parked: asyncio.TimerHandle | None = None  # a relaxed window's wake-up at its time
        self.commits = 0  # windows committed (tests, metrics)

    @property
    def open(self) -> bool:
        return self.future is not None

    def usable(self) -> bool:
        """True when the caller runs on an event loop in this thread (its writes may wait)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if loop is not self.loop:
            if self.future is not None:
                self.commit()  # the window of a loop that is gone (tests run several)
            self.loop, self.thread = loop, threading.get_ident()
        return True

    @contextmanager
    def write(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]:
        """One write inside the window (opened if needed); the caller holds the store's lock."""
        c = self.owner._conn
        if self.future is None:
            self._begin(what, quiet)
        try:
            c.execute("SAVEPOINT w")
            yield c
            c.execute("RELEASE w")
        except sqlite3.Error as exc:
            self._undo(c)
            message = self.owner._failed(what, exc)
            if not quiet:
                self.owner._fault(what, message)
            raise StoreError(message) from exc
        except BaseException:
            self._undo(c)
            raise
        self.writes += 1
        if self.writes >= self.max_writes:
            self.commit()
        elif self._parked is not None:  # a relaxed window: back to the turn-by-turn rule
            self._parked.cancel()
            self._parked = None
            assert self.loop is not None
            self.loop.call_soon(self._tick)

    def relax(self) -> None:
        """The last write of the open window may wait for the window's time."""
        if self.future is not None and self.relaxed < self.writes:
            self.relaxed += 1

    @staticmethod
    def _undo(c: sqlite3.Connection) -> None:
        try:
            c.execute("ROLLBACK TO w")
            c.execute("RELEASE w")
        except sqlite3.Error:
            pass  # the transaction is gone (SQLite rolled it back): the commit reports it

    def _begin(self, what: str, quiet: bool) -> None:
        self.owner._checked(what, quiet)
        try:
            self.owner._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            message = self.owner._failed(what, exc)
            if not quiet:
                self.owner._fault(what, message)
            raise StoreError(message) from exc
        self._open_future()

    def _open_future(self) -> asyncio.Future[None]:
        """A new window's future, registered with durable.py, and its timer or first tick."""
        assert self.loop is not None
        self.future = fut = self.loop.create_future()
        durable.opened(fut)
        self.writes = self._seen = self.relaxed = 0
        self._deadline = self.loop.time() + self.window_s
        if self.hold:
            self._timer = self.loop.call_later(self.window_s, self.commit)
        else:
            self.loop.call_soon(self._tick)
        return fut

    def _tick(self) -> None:
        """Once per turn of the loop while a window is open: commit when the turn brought no
        new write or the window's time is up."""
        if self.future is None:
            return
        assert self.loop is not None
        now = self.loop.time()
        if self.writes != self._seen and now < self._deadline:
            self._seen = self.writes
            self.loop.call_soon(self._tick)
        elif self.relaxed < self.writes or now >= self._deadline:
            self.commit()
        else:  # every write may wait: until the window's time (or a write that may not wait)
            self._parked = self.loop.call_later(self._deadline - now, self._tick)

    def commit(self) -> StoreError | None:
        """Commit the open window now (nothing when none is open); its future is settled. Does
        not raise: the error goes to the window's waiters (and is returned)."""
        fut = self.future
        if fut is None:
            return None
        self.future = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._parked is not None:
            self._parked.cancel()
            self._parked = None
        owner, n = self.owner, self.writes
        what = f"commit of {n} write{'s' if n != 1 else ''}"
        error: StoreError | None = None
        with owner._lock:
            c = owner._conn
            try:
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                rollback_quietly(c)
                message = owner._failed(what, exc)
                owner._fault(what, message)
                error = StoreError(message)
            else:
                try:
                    owner._checked(what)  # committed, but into the file at the path?
                except StoreError as exc:
                    error = exc
        self.commits += 1
        if error is None:
            owner._recovered(what)
        self._settle(fut, error)
        return error

    def _settle(self, fut: asyncio.Future[None], error: StoreError | None) -> None:
        def done() -> None:
            resolve(fut, error)

        if threading.get_ident() == self.thread and self.loop is not None and not self.loop.is_closed():
            done()
        elif self.loop is not None and not self.loop.is_closed():
            durable.closed(fut)
            self.loop.call_soon_threadsafe(done)
        else:
            durable.closed(fut)


def resolve(fut: asyncio.Future[None], error: StoreError | None) -> None:
    """Settle a window's future on its loop: done, or failed with the commit's error."""
    durable.closed(fut)
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
        fut.exception()  # retrieved: its waiters (if any) get it; no "never retrieved"
