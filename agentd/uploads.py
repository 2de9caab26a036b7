"""A finished task's artifacts, uploaded to the daemon as FILE_TRANSFER chunks before its REPLY.

Each artifact is read from the task's workspace (a regular file, no symlink), sent in
``CHUNK`` byte pieces (``file_chunk``: path, offset, data, eof, size, sha256; the envelope's
``task_id`` is the task, no recipient: to the daemon). The daemon checks the sha256 and keeps
the file in its content-addressed store (orchgpt.artifact_store). A file changed since it was
recorded is sent as it is now (size and hash of the bytes sent). After a reconnect, a file goes
on from where the daemon's copy of a cut upload stops (FILE_RESUME, `Resumes`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from orchgpt import logs
from orchgpt.artifacts import ArtifactError, check_path
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Artifact, TaskResult
from orchgpt.wire.batching import Outbox

log = logs.get("agentd.uploads")
CHUNK = 256 * 1024
MAX_QUEUED = 8  # envelopes waiting in the outbox before the next chunk is read


def _open(workspace: Path, path: str) -> BinaryIO | None:
    """The artifact's file in the workspace: a regular file reached without a symlink at its end."""
    try:
        parts = check_path(path)
    except ArtifactError as exc:
        log.warning("artifact_not_uploaded", path=path, reason=str(exc))
        return None
    try:
        fd = os.open(workspace.joinpath(*parts), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("artifact_not_uploaded", path=path, reason=str(exc))
        return None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        log.warning("artifact_not_uploaded", path=path, reason="not a regular file")
        return None
    return f


def _digest(f: BinaryIO) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    while piece := f.read(CHUNK):
        h.update(piece)
        size += len(piece)
    f.seek(0)
    return size, h.hexdigest()


def _pieces(f: BinaryIO, path: str, size: int, digest: str, start: int = 0) -> Iterator[pb.FileChunk]:
    """The file's chunks from ``start``; the first and the last carry the whole file's sha256
    (the first: so that the daemon can tell a resumed upload is of the same file)."""
    f.seek(start)
    offset = first = start
    while True:
        piece = f.read(min(CHUNK, size - offset)) if offset < size else b""
        last = offset + len(piece) >= size or not piece
        yield pb.FileChunk(
            path=path,
            offset=offset,
            data=piece,
            eof=last,
            size=size,
            sha256=digest if last or offset == first == 0 else "",
        )
        offset += len(piece)
        if last:
            break


def chunks(workspace: Path, artifacts: list[Artifact]) -> Iterator[pb.FileChunk]:
    """Each file read twice, a chunk at a time (memory stays bounded): once for its size and
    sha256, once to send it. A file that changes in between fails the daemon's check."""
    for art in artifacts:
        f = _open(workspace, art.path)
        if f is None:
            continue
        with f:
            yield from _pieces(f, art.path, *_digest(f))


Resume = Callable[[str, str, int, str], Awaitable[int]]


class Resumes:
    """FILE_RESUME round trips: where an upload cut by a disconnect goes on (the daemon keeps
    what it received, orchgpt.artifact_store). Any doubt (no answer in time, not connected)
    means offset 0: the whole file again, never a corrupt one (the daemon checks the sha256)."""

    def __init__(
        self, outbox: Callable[[], Outbox | None], make_env: Callable[..., pb.Envelope], timeout: float = 5.0
    ) -> None:
        self.outbox, self.make_env, self.timeout = outbox, make_env, timeout
        self._waiting: dict[str, asyncio.Future[tuple[int, bool]]] = {}
        # results whose re-upload was cut too: sent again after the next reconnect (`reupload`),
        # whether or not orchgpt has their REPLY by then
        self.unsent: dict[str, TaskResult] = {}

    async def ask(self, task_id: str, path: str, size: int, sha256: str) -> int:
        """The offset to go on from; -1 when the daemon has the file already."""
        env = self.make_env(
            pb.FILE_RESUME, task_id=task_id, file_chunk=pb.FileChunk(path=path, size=size, sha256=sha256)
        )
        fut: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._waiting[env.id] = fut
        try:
            ob = self.outbox()
            if ob is None or not ob.put(env):
                return 0
            offset, stored = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            log.warning("artifact_resume_unanswered", task_id=task_id, path=path)
            return 0
        finally:
            self._waiting.pop(env.id, None)
        return -1 if stored else offset if 0 <= offset <= size else 0

    async def recorded(self, task_id: str, workspace: Path, artifacts: list[Artifact]) -> bool:
        """Does orchgpt have every one of these files recorded for the task?"""
        for art in artifacts:
            f = _open(workspace, art.path)
            if f is None:
                continue
            with f:
                size, digest = _digest(f)
            if await self.ask(task_id, art.path, size, digest) != -1:
                return False
        return True

    def answer(self, env: pb.Envelope) -> None:
        """A FILE_RESUME_AT from the daemon (other envelopes are ignored here)."""
        if env.type == pb.FILE_RESUME_AT:
            fut = self._waiting.pop(env.correlation_id, None)
            if fut is not None and not fut.done():
                fut.set_result((env.file_chunk.offset, env.file_chunk.eof))


def reupload(link: Any, r: TaskResult) -> None:
    """After a reconnect: upload a result's files again, each from where the daemon's copy
    stops (`Resumes`), in the background (``link``: agentd.link.Link). Cut again: kept in
    ``link.resumes.unsent`` for the next reconnect."""
    resumes: Resumes = link.resumes

    async def go() -> None:
        resumes.unsent[r.task_id] = r
        ob = link.outbox
        ws = Path(r.workspace)
        if await upload(lambda: link.outbox, link._env, r.task_id, ws, r.artifacts, resumes.ask):
            # queued is not received: orchgpt answers in order, so "recorded" means it got them;
            # not recorded with the stream still up: refused (an ERROR, logged), not sent again
            recorded = await resumes.recorded(r.task_id, ws, r.artifacts)
            if recorded or (ob is not None and ob is link.outbox and not ob.closed):
                resumes.unsent.pop(r.task_id, None)

    task = asyncio.get_running_loop().create_task(go())
    link._answering.add(task)
    task.add_done_callback(link._answering.discard)


async def _put(outbox: Callable[[], Outbox | None], env: pb.Envelope) -> bool:
    while True:
        ob = outbox()
        if ob is None or ob.closed:
            return False
        if len(ob) <= MAX_QUEUED:
            return ob.put(env)
        await asyncio.sleep(0.005)


async def upload(
    outbox: Callable[[], Outbox | None],
    make_env: Callable[..., pb.Envelope],
    task_id: str,
    workspace: Path,
    artifacts: list[Artifact],
    resume: Resume | None = None,
) -> bool:
    """Queue every chunk on the current stream (a few at a time: memory stays bounded); False
    when the stream went away (the caller sends them again after reconnecting). ``resume``:
    ask the daemon first where each file goes on (after a reconnect)."""
    n = sent = 0
    for art in artifacts:
        f = _open(workspace, art.path)
        if f is None:
            continue
        with f:
            size, digest = _digest(f)
            start = await resume(task_id, art.path, size, digest) if resume is not None else 0
            if start < 0:
                log.info("artifact_already_stored", task_id=task_id, path=art.path)
                continue
            if start:
                log.info("artifact_upload_resuming", task_id=task_id, path=art.path, offset=start, size=size)
            for c in _pieces(f, art.path, size, digest, start):
                if not await _put(outbox, make_env(pb.FILE_TRANSFER, task_id=task_id, file_chunk=c)):
                    log.info("artifact_upload_interrupted", task_id=task_id, path=c.path, offset=c.offset)
                    return False
                n += 1
                sent += len(c.data)
    if n:
        log.info("artifacts_uploaded", task_id=task_id, files=len(artifacts), chunks=n, bytes=sent)
    return True
