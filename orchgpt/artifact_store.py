"""The daemon's content-addressed artifact store, and agents' uploads into it (FILE_TRANSFER).

Layout under ``DATA_DIR/artifacts`` (dirs 0700, files 0600):
``sha256/ab/cdef...`` the blobs, named by their hash (deduplicated: a second upload of the same
bytes keeps the one blob); ``tasks/<task id>.json`` each task's index ``{path: {sha256, size}}``;
``tmp/`` uploads in progress. A task-relative path is only ever a key of the index, never opened
as a host path here: the blob's name is its hash. ``max_bytes`` caps the blobs' total size.

An upload is a run of FILE_TRANSFER envelopes from the agent that runs (or ran) the task,
addressed to the daemon, ``task_id`` = the task, body ``file_chunk`` (path, offset, data, eof,
size, sha256): offsets follow on from 0; the last chunk has ``eof`` and the file's sha256,
checked here before the file is recorded. A chunk at offset 0 restarts an upload of the path.
An upload cut by a disconnect is kept for ``RESUME_KEEP_S`` (``forget_agent``): the agent asks
where to resume (FILE_RESUME, ``resume_offset``: the bytes kept when the size and sha256 it
declares match the upload's first chunk, else 0) and sends only the rest.

On PostgreSQL the blobs and the index live in the database instead (orchgpt/artifact_db.py,
``DbArtifactStore``: this class with its ``_commit``, ``_recorded``, ``open_reader`` and
``_stored_total`` overridden), so that every daemon of a cluster serves every file; only the
uploads in progress stay in ``tmp/`` here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import logs
from .artifacts import ArtifactError, ArtifactReader, OpenFile, check_path
from .errors import ErrorCode, OrchgptError

log = logs.get("orchgpt.artifact_store")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_TASK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_UPLOADS_PER_AGENT = 16
RESUME_KEEP_S = 600.0  # an upload cut by a disconnect waits this long for its agent to resume it


class UploadError(OrchgptError):
    """A chunk refused; ``code`` is the ERROR envelope's code."""

    def __init__(self, message: str, code: ErrorCode | str = ErrorCode.INVALID_ARGUMENT) -> None:
        super().__init__(message, code)


@dataclass
class _Upload:
    tmp: Path
    f: BinaryIO
    size: int
    received: int = 0
    h: object = field(default_factory=hashlib.sha256)
    sha256: str = ""  # the whole file's, when the first chunk declared it (resumable)
    orphaned: float | None = None  # when its agent's stream ended (monotonic)
    stream: int = 0  # the stream it comes on: set by the first chunk, then by a FILE_RESUME


class ArtifactStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        for d in (root, root / "sha256", root / "tasks", root / "tmp"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for stale in (root / "tmp").iterdir():  # uploads cut by the last shutdown
            stale.unlink(missing_ok=True)
        self.committing = 0  # bytes of verified uploads still being written (artifact_db)
        self.total = self._stored_total()
        self._uploads: dict[tuple[str, str, str], _Upload] = {}

    def _stored_total(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "sha256").glob("*/*") if p.is_file())

    async def close(self) -> None:
        """Release what the store holds open (nothing here; artifact_db: its connections)."""

    def pending_commit(self, agent_id: str) -> asyncio.Future[Any] | None:
        """The write of the agent's last verified upload when it is still going on (artifact_db:
        the database write runs in the background; the agent's next messages wait for it).
        Here a file is recorded before ``chunk`` returns: None."""
        return None

    # ------------------------------------------------------------------ reading
    def _blob(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def _index_path(self, task_id: str) -> Path:
        if not _TASK_RE.match(task_id):
            raise UploadError(f"task id {task_id!r} is not valid", "INVALID_ARGUMENT")
        return self.root / "tasks" / f"{task_id}.json"

    def files_of(self, task_id: str) -> dict[str, dict[str, object]]:
        try:
            return dict(json.loads(self._index_path(task_id).read_text()))
        except (OSError, ValueError, UploadError):
            return {}

    def _recorded(self, task_id: str, key: str) -> tuple[str, int] | None:
        """The (sha256, size) recorded for the task's file ``key``, or None."""
        entry = self.files_of(task_id).get(key)
        return (str(entry.get("sha256")), int(str(entry.get("size")))) if entry else None

    async def open_reader(self, task_id: str, path: str) -> ArtifactReader | None:
        """``open`` behind the ArtifactReader interface that both backends serve through."""
        return self.open(task_id, path)

    def open(self, task_id: str, path: str) -> OpenFile | None:
        """The task's recorded file at ``path`` (task-relative), or None when not recorded."""
        key = "/".join(check_path(path))
        entry = self.files_of(task_id).get(key)
        if not entry or not _HEX.match(str(entry.get("sha256", ""))):
            return None
        try:
            fd = os.open(self._blob(str(entry["sha256"])), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise ArtifactError(
                f"file {key!r} of task {task_id} is recorded but its blob is missing from the artifact store",
                "DATA_LOSS",
            ) from None
        return OpenFile(fd, os.fstat(fd).st_size)

    # ------------------------------------------------------------------ uploading
    def chunk(
        self,
        agent_id: str,
        task_id: str,
        path: str,
        offset: int,
        data: bytes,
        eof: bool,
        size: int,
        sha256: str,
        stream: int = 0,
    ) -> bool:
        """Take one chunk; True when the file is complete and recorded. UploadError on refusal
        (the upload of that path is then discarded). ``stream``: which of the agent's streams
        it came on; a late chunk of a stream whose upload another stream resumed is ignored."""
        key = "/".join(check_path(path))  # ArtifactError(INVALID_ARGUMENT) names the path
        self._index_path(task_id)
        ukey = (agent_id, task_id, key)
        self._expire()
        up = self._uploads.get(ukey)
        if offset == 0:
            if up is not None:
                self._discard(ukey)
            up = self._start(agent_id, ukey, size)
            up.sha256, up.stream = (sha256.lower() if _HEX.match(sha256.lower()) else ""), stream
        elif up is not None and stream and up.stream and up.stream != stream:
            log.info("artifact_chunk_stale", agent_id=agent_id, task_id=task_id, path=key, offset=offset)
            return False
        elif up is None or offset != up.received:
            have = up.received if up else 0
            self._discard(ukey)
            raise UploadError(
                f"file_chunk.offset {offset} for {key!r} of task {task_id}: expected "
                f"{have} (uploads start at offset 0 and follow on); upload discarded"
            )
        up.orphaned = None
        try:
            if up.received + len(data) > up.size:
                raise UploadError(f"file_chunk for {key!r}: more bytes than file_chunk.size {up.size}")
            up.f.write(data)
            up.h.update(data)  # type: ignore[attr-defined]
            up.received += len(data)
            if not eof:
                return False
            digest = up.h.hexdigest()  # type: ignore[attr-defined]
            if up.received != up.size:
                raise UploadError(
                    f"file {key!r} of task {task_id}: {up.received} bytes received, "
                    f"file_chunk.size says {up.size}; upload discarded"
                )
            if sha256.lower() != digest:
                raise UploadError(
                    f"file {key!r} of task {task_id}: sha256 mismatch (file_chunk.sha256 "
                    f"{sha256[:16]!r}..., received bytes hash to {digest[:16]}...); "
                    "upload discarded",
                    "DATA_LOSS",
                )
            self._commit(ukey, up, digest, task_id, key)
            return True
        except UploadError:
            self._discard(ukey)
            raise
        except OSError as exc:
            self._discard(ukey)
            raise UploadError(f"cannot store {key!r}: {exc}", "UNAVAILABLE") from None

    def _start(self, agent_id: str, ukey: tuple[str, str, str], size: int) -> _Upload:
        if size < 0:
            raise UploadError("file_chunk.size must be given (the file's size, >= 0)")
        if sum(1 for k in self._uploads if k[0] == agent_id) >= MAX_UPLOADS_PER_AGENT:
            raise UploadError(
                f"more than {MAX_UPLOADS_PER_AGENT} uploads in progress for agent {agent_id}", "RESOURCE_EXHAUSTED"
            )
        self._check_cap(size, ukey[2])
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        up = _Upload(tmp, os.fdopen(fd, "wb"), size)
        self._uploads[ukey] = up
        return up

    def _check_cap(self, size: int, key: str) -> None:
        pending = sum(u.size for u in self._uploads.values()) + self.committing
        if self.max_bytes and self.total + pending + size > self.max_bytes:
            log.error("artifact_store_full", path=key, size=size, total=self.total, cap=self.max_bytes)
            raise UploadError(
                f"artifact store full: storing {key!r} ({size} bytes) would exceed "
                f"artifact_store_max_bytes={self.max_bytes} ({self.total} bytes stored, {pending} "
                "being uploaded); raise the setting or remove old artifacts",
                "RESOURCE_EXHAUSTED",
            )

    def _commit(self, ukey: tuple[str, str, str], up: _Upload, digest: str, task_id: str, key: str) -> None:
        up.f.flush()
        os.fsync(up.f.fileno())
        up.f.close()
        self._uploads.pop(ukey, None)
        blob = self._blob(digest)
        if blob.exists():
            up.tmp.unlink(missing_ok=True)  # the same bytes are stored already
            dedup = True
        else:
            blob.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(up.tmp, blob)
            self.total += up.size
            dedup = False
        index = self.files_of(task_id)
        index[key] = {"sha256": digest, "size": up.size}
        ipath = self._index_path(task_id)
        tmp = ipath.with_name(f".{ipath.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(index, f, sort_keys=True)
        os.replace(tmp, ipath)
        log.info("artifact_stored", task_id=task_id, path=key, size=up.size, sha256=digest, deduplicated=dedup)

    def _discard(self, ukey: tuple[str, str, str]) -> None:
        up = self._uploads.pop(ukey, None)
        if up is not None:
            up.f.close()
            up.tmp.unlink(missing_ok=True)

    def forget_agent(self, agent_id: str) -> None:
        """The agent's stream ended: its unfinished uploads wait ``RESUME_KEEP_S`` for it to
        resume them (``resume_offset``); those that cannot be resumed (no declared sha256) go."""
        now = time.monotonic()
        for k in [k for k in self._uploads if k[0] == agent_id]:
            up = self._uploads[k]
            if up.sha256:
                up.orphaned = now
                up.f.flush()
                log.info(
                    "artifact_upload_kept",
                    agent_id=agent_id,
                    task_id=k[1],
                    path=k[2],
                    received=up.received,
                    size=up.size,
                )
            else:
                log.info("artifact_upload_discarded", agent_id=agent_id, task_id=k[1], path=k[2])
                self._discard(k)

    def _expire(self) -> None:
        limit = time.monotonic() - RESUME_KEEP_S
        for k in [k for k, u in self._uploads.items() if u.orphaned is not None and u.orphaned < limit]:
            log.info("artifact_upload_expired", agent_id=k[0], task_id=k[1], path=k[2])
            self._discard(k)

    def resume_offset(self, agent_id: str, task_id: str, path: str, size: int, sha256: str, stream: int = 0) -> int:
        """FILE_RESUME: where the agent's upload of this file goes on. The bytes kept of an upload
        of the same file (size and sha256), 0 when there is none (another kept one is dropped),
        -1 when the task already has exactly this file recorded (nothing to send)."""
        key = "/".join(check_path(path))
        self._index_path(task_id)
        self._expire()
        if self._recorded(task_id, key) == (sha256.lower(), size):
            return -1
        ukey = (agent_id, task_id, key)
        up = self._uploads.get(ukey)
        if up is None:
            return 0
        if up.size != size or not up.sha256 or up.sha256 != sha256.lower():
            self._discard(ukey)
            return 0
        up.orphaned, up.stream = None, stream
        log.info("artifact_upload_resumed", agent_id=agent_id, task_id=task_id, path=key, offset=up.received, size=size)
        return up.received
