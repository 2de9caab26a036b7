"""An agent's results journal kept open (orchgpt.wire.journal's format): what agentd writes per task.

The journal's promise is unchanged: a result is on disk (fsynced) before the agent reports it,
and it stays there until orchgpt confirms it. What a task costs is not (issue 17, session 4: an
echo agent spent 70 % of its CPU here, an ``open`` + ``write`` + ``fsync`` per result and a whole
rewrite, fsynced, of every unconfirmed result at each confirmation):

- ``append`` writes the result's line at once (one ``write`` to the open file);
  ``synced()`` returns once every line written so far is fsynced. One ``fsync``, in a worker
  thread (the event loop runs on meanwhile), covers every line written before it started: the
  results that finish while one runs share the next. A REPLY waits for ``synced()``. The
  thread is the writer's own (not the loop's default executor, which an agent's blocking work
  may fill).
- ``strike`` (orchgpt confirmed these results) appends a tombstone line per result (``-TASK_ID``;
  not fsynced: a tombstone lost in a crash only re-reports a result orchgpt already has, which
  it ignores); the file is removed once nothing in it is live, and rewritten with only the live
  results (fsynced, atomically) when tombstones and dead lines are most of it.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import logs
from . import journal

log = logs.get("orchgpt.journal")

COMPACT_LINES = 1024  # a file of more lines than this, more than 3/4 of them dead, is rewritten


def tombstone(task_id: str) -> bytes:
    return b"-" + task_id.encode() + b"\n"


class JournalWriter:
    """The open journal of one agent (agentd/link_results.py)."""

    def __init__(self, path: Path, kept: list[tuple[str, bytes]] | None = None) -> None:
        self.path = path
        self._fd = -1
        self._lines = 0  # lines in the file (live, dead, tombstones)
        # task id -> its line, not yet confirmed (``kept``: (task id, protobuf bytes) read at start)
        self.live: dict[str, bytes] = {t: journal.line_of(data) for t, data in kept or ()}
        self._waiting: list[asyncio.Future[None]] = []  # synced() callers whose lines need an fsync
        self._flushing = False
        self._retired: list[int] = []  # descriptors to close once the running fsync is done
        self.fsyncs = 0  # fsyncs done for appends (tests: one per group, not one per result)
        # its own thread: an fsync never queues behind an agent's blocking work in the loop's default executor
        self._thread: ThreadPoolExecutor | None = None
        if self.live:  # the file as read: without tombstones, dead or torn lines (appends start clean)
            self._compact()
        else:
            path.unlink(missing_ok=True)

    def _open(self) -> int:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def _retire(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            if self._flushing:
                self._retired.append(fd)  # the worker thread may be in fsync(fd) right now
            else:
                os.close(fd)

    def append(self, task_id: str, data: bytes) -> None:
        """Write one result (``data``: its protobuf bytes); durable once ``synced()`` returns."""
        line = journal.line_of(data)
        os.write(self._open(), line)
        self.live[task_id] = line
        self._lines += 1

    async def synced(self) -> None:
        """Return once every line written so far is fsynced (one fsync for all that wait)."""
        if self._fd < 0:
            return  # nothing written since the file was last rewritten (fsynced) or removed
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                fd = self._fd
                try:
                    if fd >= 0:  # else rewritten (fsynced) or removed meanwhile: nothing to wait for
                        if self._thread is None:
                            self._thread = ThreadPoolExecutor(1, thread_name_prefix="journal-fsync")
                        await asyncio.get_running_loop().run_in_executor(self._thread, os.fsync, fd)
                        self.fsyncs += 1
                except OSError as exc:
                    for f in waiting:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for f in waiting:
                    if not f.done():
                        f.set_result(None)
        finally:
            self._flushing = False
            retired, self._retired = self._retired, []
            for fd in retired:
                os.close(fd)

    def strike(self, task_ids: list[str] | set[str]) -> None:
        """orchgpt has these results: out of the journal (tombstones; the file goes once empty)."""
        gone = [t for t in task_ids if self.live.pop(t, None) is not None]
        if not gone:
            return
        if not self.live:
            self._retire()
            self.path.unlink(missing_ok=True)
            self._lines = 0
            return
        os.write(self._open(), b"".join(tombstone(t) for t in gone))
        self._lines += len(gone)
        if self._lines > COMPACT_LINES and self._lines > 4 * len(self.live):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the file with the live lines only (fsynced, then renamed over it)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(self.live.values()))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self.path)
        self._retire()
        self._fd = fd  # the new file, open for appends (O_APPEND is not needed: we wrote all of it)
        os.lseek(fd, 0, os.SEEK_END)
        self._lines = len(self.live)

    def close(self) -> None:
        self._retire()
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None
