"""Files the daemon serves (FetchArtifact): only from its own workspace root, by a task-relative path.

The rule (docs/security.md, "Artifact paths"): the file is ``<workspaces>/<workspace>/<path>``
where ``<workspaces>`` is the daemon's setting, ``<workspace>`` the task's id (or, for a
delegated sub-task sharing a project directory, the id of a task of the same session named in
its ``workspace`` option) and ``<path>`` a relative path without ``..``, NUL bytes or
backslashes. Every component is opened with O_NOFOLLOW relative to its parent's descriptor, so a
symlink anywhere below the root (planted by generated code, say) is refused, and a file
swapped for a symlink after a check cannot redirect the read. The workspace an agent reports in
its TaskResult is a label and is never opened.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import ErrorCode, OrchgptError

_WS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_PATH = 4096


class ArtifactError(OrchgptError):
    """A file cannot be served; ``code`` says why (INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND)."""

    def __init__(self, message: str, code: ErrorCode | str) -> None:
        super().__init__(message, code)


def check_path(path: str) -> list[str]:
    """The components of a task-relative path, or ArtifactError(INVALID_ARGUMENT) naming ``path``."""
    if not path:
        raise ArtifactError("path is empty: give a file path relative to the task's workspace", "INVALID_ARGUMENT")
    if len(path) > MAX_PATH:
        raise ArtifactError(f"path is longer than {MAX_PATH} characters", "INVALID_ARGUMENT")
    if "\x00" in path:
        raise ArtifactError("path contains a NUL byte", "INVALID_ARGUMENT")
    if "\\" in path:
        raise ArtifactError(f"path {path!r} contains a backslash; use '/'", "INVALID_ARGUMENT")
    if path.startswith("/"):
        raise ArtifactError(f"path {path!r} is absolute; give it relative to the task's workspace", "INVALID_ARGUMENT")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArtifactError(f"path {path!r} contains '..'", "INVALID_ARGUMENT")
    if not parts:
        raise ArtifactError(f"path {path!r} names no file", "INVALID_ARGUMENT")
    return parts


def workspace_name(task: object, lookup: object = None) -> str:
    """The directory of a task under the daemon's workspace root (see the module doc)."""
    from . import authz

    task_id = str(getattr(task, "task_id", ""))
    options = getattr(task, "options", None) or {}
    wanted = options.get(authz.WORKSPACE_OPTION, "").strip()
    if not wanted or wanted == task_id or not _WS_RE.match(wanted) or not callable(lookup):
        return task_id
    parent_id = getattr(task, "parent_task_id", "")
    parent = lookup(parent_id) if parent_id else None
    d = authz.workspace_option(options, lookup, parent=parent, owner=getattr(task, "submitted_by", None))
    return wanted if d else task_id


class ArtifactReader(Protocol):
    """A file being served (FetchArtifact): its size, and its bytes in pieces of at most ``size``,
    ending with an empty piece at its end (at least one piece: an empty file is one empty piece).
    A local file (``OpenFile``) or a blob in the database (orchgpt.artifact_db). Reading may
    raise ArtifactError (DATA_LOSS: the stored bytes are not the recorded ones)."""

    size: int

    def stream(self, size: int) -> AsyncGenerator[bytes, None]: ...


@dataclass
class OpenFile:
    fd: int
    size: int

    def chunks(self, size: int) -> Iterator[bytes]:
        with os.fdopen(self.fd, "rb") as f:
            while True:
                data = f.read(size)
                yield data
                if not data:
                    return

    async def stream(self, size: int) -> AsyncGenerator[bytes, None]:
        """``chunks`` for the ArtifactReader interface (local reads, as they always were)."""
        for data in self.chunks(size):
            yield data


def open_artifact(root: Path, workspace: str, path: str) -> OpenFile:
    """Open ``root/workspace/path`` for reading, each component with O_NOFOLLOW.

    ArtifactError: INVALID_ARGUMENT (bad path), PERMISSION_DENIED (a symlink on the way),
    NOT_FOUND (no such regular file)."""
    parts = check_path(path)
    if not _WS_RE.match(workspace) or workspace in (".", ".."):
        raise ArtifactError(f"invalid workspace {workspace!r}", "INVALID_ARGUMENT")
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise ArtifactError(f"no file {path!r}: the workspace root does not exist", "NOT_FOUND") from None
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        for comp in (workspace, *parts[:-1]):
            nfd = _open_at(comp, dir_flags, dfd, path)
            os.close(dfd)
            dfd = nfd
        fd = _open_at(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dfd, path)
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ArtifactError(f"{path!r} is not a regular file", "NOT_FOUND")
    os.set_blocking(fd, True)
    return OpenFile(fd, st.st_size)


def _open_at(name: str, flags: int, dir_fd: int, path: str) -> int:
    import errno

    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise ArtifactError(
                f"path {path!r} leads through a symbolic link ({name!r}); refused", "PERMISSION_DENIED"
            ) from None
        if exc.errno == errno.ENOTDIR:
            # O_DIRECTORY|O_NOFOLLOW on a symlink, or a file used as a directory
            if _is_symlink(name, dir_fd):
                raise ArtifactError(
                    f"path {path!r} leads through a symbolic link ({name!r}); refused", "PERMISSION_DENIED"
                ) from None
            raise ArtifactError(f"no file {path!r}: {name!r} is not a directory", "NOT_FOUND") from None
        if exc.errno == errno.EACCES:
            raise ArtifactError(f"file {path!r} is not readable by the orchestrator", "PERMISSION_DENIED") from None
        raise ArtifactError(f"no file {path!r}", "NOT_FOUND") from None


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
