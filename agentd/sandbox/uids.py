"""Sandbox uids: each live workspace gets its own uid from a range, for as long as it runs.

Used when agentd is root (it can switch uids). Agents on the same host share one state
directory (0700, owned by the agent's user): a lock file taken with flock(2) and a JSON
table of leases ``uid -> {workspace, holders}``. A holder is one running sandbox
(process id, its start time and a token), so a lease whose processes died is taken back
at the next allocation. Runs in the same workspace (a project shared by delegated
sub-tasks) share its uid; two different workspaces never hold the same uid at once.

The preferred uid of a workspace is derived from its path (so it is usually the same
from run to run); when it is taken, the next free one in the range is used. When the
last holder releases a lease, the workspace is given back to the agent's user and any
process still running under that uid is killed, so that a uid handed out later owns
nothing and runs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from ..errors import ToolError

UID_BASE = 1_500_000_000
UID_COUNT = 1_000_000
NOBODY = 65534


class _Holder(TypedDict):
    """One running sandbox holding a lease: its process, that process's start time, a token."""

    pid: int
    start: int | None
    token: str


# uids.json: str(uid) -> {"workspace": str, "holders": [_Holder, ...]}, as read back from JSON
# (checked where used: a hand-edited or truncated table must not crash the allocator).
_Table = dict[str, dict[str, Any]]


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data.rsplit(b")", 1)[1].split()[19])  # field 22: starttime
    except (IndexError, ValueError):
        return None


def _mapped_ranges(path: str) -> list[tuple[int, int]] | None:
    """[(first, count)] of ids usable here, None when the map cannot be read."""
    try:
        with open(path) as f:
            return [(int(a), int(c)) for a, _b, c in (line.split() for line in f)]
    except (OSError, ValueError):
        return None


def _is_mapped(ranges: list[tuple[int, int]] | None, ident: int) -> bool:
    if ranges is None:
        return ident == NOBODY
    return any(first <= ident < first + count for first, count in ranges)


@dataclass(frozen=True)
class UidLease:
    uid: int
    workspace: str
    token: str
    shared_nobody: bool = False  # no range is mapped here: every task runs as nobody


class UidAllocator:
    """Hands out sandbox uids from [first, first + count), one per live workspace."""

    def __init__(self, state_dir: str | os.PathLike[str], first: int = UID_BASE, count: int = UID_COUNT) -> None:
        if count < 1 or first < 1000:
            raise ValueError("the sandbox uid range must be above 1000 and not empty")
        self.state_dir = Path(state_dir)
        self.first = first
        self.count = count

    # ---- the state directory
    def _ensure_dir(self) -> None:
        d = self.state_dir
        try:
            d.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ToolError(f"sandbox uid state dir {d} must be a directory owned by uid {os.geteuid()} with mode 0700")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Table]:
        self._ensure_dir()
        fd = os.open(self.state_dir / "uids.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            table_path = self.state_dir / "uids.json"
            try:
                table = json.loads(table_path.read_text() or "{}")
            except (OSError, ValueError):
                table = {}
            if not isinstance(table, dict):
                table = {}
            yield table
            tmp = self.state_dir / f"uids.json.{os.getpid()}"
            fd2 = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd2, "w") as f:
                json.dump(table, f)
            os.replace(tmp, table_path)
        finally:
            os.close(fd)  # releases the flock

    @staticmethod
    def _prune(table: _Table) -> None:
        """Drop the holders that died (an agent killed mid-run); a lease left without
        holders is released as `release` would have done it."""
        for uid in list(table):
            entry = table[uid]
            holders = [
                h
                for h in entry.get("holders", [])
                if isinstance(h, dict) and _start_time(int(h.get("pid", 0))) == h.get("start")
            ]
            if holders:
                entry["holders"] = holders
                continue
            del table[uid]
            with contextlib.suppress(ValueError, OSError):
                _give_back(int(uid), Path(entry.get("workspace", "")))

    # ---- leases
    def acquire(self, workspace: str | os.PathLike[str]) -> UidLease:
        ws = os.fspath(workspace)
        uids = _mapped_ranges("/proc/self/uid_map")
        gids = _mapped_ranges("/proc/self/gid_map")
        token = secrets.token_hex(8)
        me: _Holder = {"pid": os.getpid(), "start": _start_time(os.getpid()), "token": token}
        with self._locked() as table:
            self._prune(table)
            for key, entry in table.items():
                if entry.get("workspace") == ws:
                    entry["holders"].append(me)
                    return UidLease(int(key), ws, token)
            base = zlib.crc32(os.fsencode(ws)) % self.count
            unmapped = 0
            for i in range(self.count):
                uid = self.first + (base + i) % self.count
                if str(uid) in table:
                    continue
                if not (_is_mapped(uids, uid) and _is_mapped(gids, uid)):
                    unmapped += 1
                    if unmapped > 64:
                        break  # this user namespace maps (nearly) none of the range
                    continue
                table[str(uid)] = {"workspace": ws, "holders": [me]}
                return UidLease(uid, ws, token)
        if unmapped > 64 and _is_mapped(uids, NOBODY) and _is_mapped(gids, NOBODY):
            return UidLease(NOBODY, ws, token, shared_nobody=True)
        raise ToolError(
            f"no sandbox uid is free: the {self.count} uids from {self.first} are held by live "
            "sandboxes or not mapped in this user namespace"
        )

    def release(self, lease: UidLease, owner: tuple[int, int] | None = None) -> None:
        """Drop a holder; the last one gives the workspace back to `owner` (uid, gid)
        (default: the agent's own) and kills what still runs under the uid."""
        last = False
        with self._locked() as table:
            entry = table.get(str(lease.uid))
            if entry is not None and entry.get("workspace") == lease.workspace:
                entry["holders"] = [h for h in entry["holders"] if h.get("token") != lease.token]
                if not entry["holders"]:
                    del table[str(lease.uid)]
                    last = True
            if last:
                _give_back(lease.uid, Path(lease.workspace), owner)

    def holders(self) -> dict[int, str]:
        """uid -> workspace of the live leases (for tests and diagnostics)."""
        with self._locked() as table:
            self._prune(table)
            return {int(u): e["workspace"] for u, e in table.items()}


def _give_back(uid: int, workspace: Path, owner: tuple[int, int] | None = None) -> None:
    """A lease ends: nothing may run under its uid, and the workspace is the agent's again."""
    kill_uid(uid)
    if workspace.is_absolute() and workspace.is_dir() and workspace.stat().st_uid == uid:
        o_uid, o_gid = owner or (os.geteuid(), os.getegid())
        chown_tree(workspace, o_uid, o_gid)


def chown_tree(root: Path, uid: int, gid: int, mode: int | None = 0o700) -> None:
    os.chown(root, uid, gid)
    if mode is not None:
        os.chmod(root, mode)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, gid)


def kill_uid(uid: int) -> None:
    """SIGKILL every process whose real uid is `uid` (only ever a sandbox uid)."""
    if uid < 1000 or uid == os.geteuid():
        return
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                line = next((x for x in f if x.startswith("Uid:")), "")
        except OSError:
            continue
        parts = line.split()
        if len(parts) > 1 and parts[1] == str(uid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
