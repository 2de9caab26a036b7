"""The daemon's data directory: private (0700) and owned by one daemon at a time.

``orchgpt serve`` takes an exclusive ``flock`` on ``DATA_DIR/orchgpt.lock`` before it
opens the store, and holds it for its whole life (the kernel drops it when the process
dies, even by SIGKILL). The lock file records the holder's pid and address, so that a
second daemon on the same data dir exits at once naming them: two daemons sharing a
store would each recover and run the other's tasks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from . import logs
from .errors import OrchgptError

log = logs.get("orchgpt.datadir")

LOCK_NAME = "orchgpt.lock"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class DataDirInUse(OrchgptError):
    """Another orchgpt holds the data directory."""


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 when this user owns it."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    tighten(path, PRIVATE_DIR)
    return path


def tighten(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` if it is more open and ours; a warning when it cannot be."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_mode & 0o777 & ~mode == 0:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        log.warning("cannot_restrict_mode", path=str(path), mode=oct(mode), error=str(exc))


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """os.open a state file readable by its owner only (an existing file is tightened too)."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, PRIVATE_FILE)
    return fd


class DataDirLock:
    """An exclusive lock on a data directory, held until :meth:`release` or process exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirLock:
        make_private_dir(self.data_dir)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise DataDirInUse(
                f"data dir {self.data_dir} is in use by another orchgpt ({holder}); "
                "stop that daemon first, or give this one its own --data-dir"
            ) from None
        self._fd = fd
        self.record("")
        return self

    def record(self, address: str) -> None:
        """Write who holds the lock (pid, address once listening)."""
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "address": address, "since": int(time.time())}).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data + b"\n", 0)
        except OSError as exc:  # the data dir was removed or its disk is full: the lock still holds
            log.warning("lock_file_not_written", path=str(self.path), error=str(exc))

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock


def _read(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, object]) -> str:
    pid = holder.get("pid")
    address = holder.get("address")
    if not pid:
        return "pid unknown"
    return f"pid {pid}, " + (f"listening on {address}" if address else "still starting")


def holder_of(data_dir: Path) -> dict[str, object]:
    """What the lock file of ``data_dir`` says (pid, address, since); {} when nothing."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)
