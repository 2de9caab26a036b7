"""A finished task's artifacts, uploaded to the daemon as FILE_TRANSFER chunks before its REPLY.

Each artifact is read from the task's workspace (a regular file, no symlink), sent in
``CHUNK`` byte pieces (``file_chunk``: path, offset, data, eof, size, sha256; the envelope's
``task_id`` is the task, no recipient: to the daemon). The daemon checks the sha256 and keeps
the file in its content-addressed store (orchgpt.artifact_store). A file changed since it was
recorded is sent as it is now (size and hash of the bytes sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from orchgpt import logs
from orchgpt.artifacts import ArtifactError, check_path
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Artifact
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


def chunks(workspace: Path, artifacts: list[Artifact]) -> Iterator[pb.FileChunk]:
    """Each file read twice, a chunk at a time (memory stays bounded): once for its size and
    sha256, once to send it. A file that changes in between fails the daemon's check."""
    for art in artifacts:
        f = _open(workspace, art.path)
        if f is None:
            continue
        with f:
            h = hashlib.sha256()
            size = 0
            while piece := f.read(CHUNK):
                h.update(piece)
                size += len(piece)
            digest = h.hexdigest()
            f.seek(0)
            offset = 0
            while True:
                piece = f.read(min(CHUNK, size - offset)) if offset < size else b""
                last = offset + len(piece) >= size or not piece
                yield pb.FileChunk(path=art.path, offset=offset, data=piece, eof=last, size=size,
                                   sha256=digest if last else "")
                offset += len(piece)
                if last:
                    break


async def upload(outbox: Callable[[], Outbox | None], make_env: Callable[..., pb.Envelope],
                 task_id: str, workspace: Path, artifacts: list[Artifact]) -> bool:
    """Queue every chunk on the current stream (a few at a time: memory stays bounded); False
    when the stream went away (the caller sends them again after reconnecting)."""
    n = 0
    for c in chunks(workspace, artifacts):
        while True:
            ob = outbox()
            if ob is None or ob.closed:
                log.info("artifact_upload_interrupted", task_id=task_id, path=c.path)
                return False
            if len(ob) <= MAX_QUEUED:
                break
            await asyncio.sleep(0.005)
        if not ob.put(make_env(pb.FILE_TRANSFER, task_id=task_id, file_chunk=c)):
            log.info("artifact_upload_interrupted", task_id=task_id, path=c.path)
            return False
        n += 1
    if n:
        log.info("artifacts_uploaded", task_id=task_id, files=len(artifacts), chunks=n)
    return True
