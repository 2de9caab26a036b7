"""The sandbox for generated code: run one command in a task's workspace, confined.

A command runs as a subprocess with:

* a wall-clock limit (the whole process group is killed at the limit: "killed at
  time limit Ns"), and RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (file size),
  RLIMIT_CORE=0 and, when it runs under its own uid, RLIMIT_NPROC;
* a clean environment (PATH, HOME=workspace, LANG, PYTHONDONTWRITEBYTECODE,
  PYTHONUNBUFFERED, TMPDIR) and nothing else: no API keys, no ORCHGPT_*, no
  certificate paths; stdin at EOF; cwd = workspace; output captured and bounded;
* the strongest isolation the machine allows, detected once per process
  (``ORCHGPT_SANDBOX_ISOLATION=none`` turns it off):

  ``root-ns``  (agentd runs as root and may create namespaces) new network, mount
               and pid namespaces; the command runs under a dedicated unprivileged
               uid derived from its workspace (the workspace is chowned to it), with
               no capabilities and no_new_privs. /tmp, /var/tmp and /dev/shm are
               private; protected paths (the agent's key and certificates) are covered;
               directories the uid could not traverse (e.g. /root holding the Python
               toolchain) are replaced by an empty tmpfs into which only the toolchain
               and the workspace are bound back.
  ``user-ns``  (not root, unprivileged user namespaces allowed) the same namespaces
               inside a user namespace; the uid cannot change, so the protected paths
               are hidden by the mount namespace and every capability is dropped.
  ``none``     plain subprocess with the limits only; the result says that the network
               is reachable and the agent's files are readable by path.

The loopback interface of the private network namespace is up, so a service the
command starts is reachable from inside the same sandbox run (and from nowhere else).

The namespace setup runs in a small launcher, `launch_main` (this module, run with
``python -I -S``), that unshare(1) starts; it mounts, sets the limits, drops the uid
and execs the command. This module imports only the standard library at load time so
the launcher starts fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentd.errors import ToolError

if TYPE_CHECKING:
    import asyncio

# asyncio is imported inside the functions that need it: the launcher imports this
# module too, and must start fast.

SETUP_FAILED_EXIT = 125  # the launcher could not set the sandbox up
EXEC_FAILED_EXIT = 127  # the command was not found or not executable
_UID_BASE = 1_500_000_000
_UID_SPAN = 1_000_000
_PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

# ---------------------------------------------------------------- protected paths

_PROTECTED: set[str] = set()


def protect_paths(*paths: str | os.PathLike[str]) -> None:
    """Declare files or directories (the agent's key, certificate, CA, cert dir) that no
    sandboxed command may read. agentd calls this at start-up with its certificate paths."""
    for p in paths:
        if p:
            _PROTECTED.add(os.path.abspath(os.fspath(p)))


def protected_paths() -> list[str]:
    return sorted(_PROTECTED)


# ---------------------------------------------------------------- limits and results


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0
    memory_mb: int = 1024
    cpu_s: int | None = None  # default: the time limit rounded up, plus one second
    file_size_mb: int = 64
    processes: int = 256  # only enforced when the command runs under its own uid
    output_bytes: int = 64_000  # per stream kept (head and tail), the rest is dropped

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        if settings is None:
            return cls()
        return cls(
            timeout_s=float(getattr(settings, "sandbox_timeout_s", 60.0)),
            memory_mb=int(getattr(settings, "sandbox_memory_mb", 1024)),
        )


@dataclass(frozen=True)
class Isolation:
    """What confinement this machine gives (detected once, see `detect_isolation`)."""

    mode: str  # "root-ns" | "user-ns" | "none"
    reason: str = ""  # why a stronger mode was not available

    @property
    def network(self) -> bool:
        return self.mode != "none"

    @property
    def mounts(self) -> bool:
        return self.mode != "none"


@dataclass
class SandboxResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    network_isolated: bool
    uid_dropped: bool
    files_hidden: bool  # protected paths hidden by a mount namespace
    notes: list[str] = field(default_factory=list)
    truncated: bool = False
    signal: str = ""  # name of the signal that ended the command, if any

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def isolation_note(self) -> str:
        """Empty when fully isolated; otherwise what is missing, in one line."""
        return "; ".join(self.notes)

    def describe(self, limit: int = 12_000) -> str:
        """The result as the model reads it: exit status, then the output (bounded)."""
        if self.timed_out:
            head = f"$ {self.command}\n{self.notes_timeout()}"
        else:
            head = f"$ {self.command}\nexit code {self.exit_code}" + (
                f" (signal {self.signal})" if self.signal else ""
            )
        parts = [head + f", {self.duration_s:.1f}s"]
        if self.stdout:
            parts.append("stdout:\n" + _tail(self.stdout, limit))
        if self.stderr:
            parts.append("stderr:\n" + _tail(self.stderr, limit // 2))
        return "\n".join(parts)

    def notes_timeout(self) -> str:
        return next(
            (n for n in self.notes if n.startswith("killed at time limit")), "killed at time limit"
        )


def summarize_tests(result: SandboxResult | None) -> str:
    """A test run in a few words: the runner's summary line (pytest's last line), or the exit status."""
    if result is None:
        return "no tests ran"
    if result.timed_out:
        return result.notes_timeout()
    for line in reversed(result.stdout.splitlines()):
        line = line.strip().strip("=").strip()
        if line and re.search(r"\b(passed|failed|error|ok|FAIL|PASS)\b", line, re.I):
            return line[:200]
    return f"exit code {result.exit_code}"


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[... cut ...]\n" + text[-limit:]


# ---------------------------------------------------------------- detection

_ISOLATION: Isolation | None = None
_DETECT_LOCK: asyncio.Lock | None = None
_NS_FLAGS = ["--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


async def _probe(argv: list[str]) -> str:
    """Run argv; '' when it exits 0, otherwise its error text."""
    import asyncio

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return str(exc)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return "timed out"
    return (
        ""
        if proc.returncode == 0
        else (err.decode(errors="replace").strip() or f"exit {proc.returncode}")
    )


async def detect_isolation(refresh: bool = False) -> Isolation:
    """Find out once which isolation mode works here (root-ns, user-ns or none)."""
    import asyncio

    global _ISOLATION, _DETECT_LOCK
    if _ISOLATION is not None and not refresh:
        return _ISOLATION
    if _DETECT_LOCK is None:
        _DETECT_LOCK = asyncio.Lock()
    async with _DETECT_LOCK:
        if _ISOLATION is not None and not refresh:
            return _ISOLATION
        _ISOLATION = await _detect()
        return _ISOLATION


async def _detect() -> Isolation:
    wanted = os.environ.get("ORCHGPT_SANDBOX_ISOLATION", "auto").strip().lower()
    if wanted in ("none", "off"):
        return Isolation("none", "turned off by ORCHGPT_SANDBOX_ISOLATION")
    if not sys.platform.startswith("linux"):
        return Isolation("none", f"namespaces need Linux (this is {sys.platform})")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Isolation("none", "unshare(1) from util-linux is not installed")
    true = shutil.which("true") or "/bin/true"
    reasons = []
    if os.geteuid() == 0:
        err = await _probe([unshare, *_NS_FLAGS, true])
        if not err:
            return Isolation("root-ns")
        reasons.append(f"root namespaces refused ({err})")
    err = await _probe([unshare, "--user", "--map-root-user", *_NS_FLAGS, true])
    if not err:
        return Isolation("user-ns", "; ".join(reasons))
    reasons.append(f"user namespaces refused ({err})")
    return Isolation("none", "; ".join(reasons))


# ---------------------------------------------------------------- uid choice


def _mapped(path: str, ident: int) -> bool:
    try:
        with open(path) as f:
            for line in f:
                inside, _outside, count = (int(x) for x in line.split())
                if inside <= ident < inside + count:
                    return True
    except (OSError, ValueError):
        return ident == 65534
    return False


def sandbox_uid(workspace: Path) -> int | None:
    """A dedicated unprivileged uid (= gid) for a workspace, stable across runs, or None
    when this user namespace cannot switch to one."""
    uid = _UID_BASE + zlib.crc32(os.fsencode(str(workspace))) % _UID_SPAN
    if _mapped("/proc/self/uid_map", uid) and _mapped("/proc/self/gid_map", uid):
        return uid
    if _mapped("/proc/self/uid_map", 65534) and _mapped("/proc/self/gid_map", 65534):
        return 65534
    return None


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, uid)


def _toolchain_dirs() -> list[str]:
    """Directories the sandboxed command needs to read: the running Python's prefixes."""
    dirs = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    }
    for d in sys.path:
        if d and os.path.isdir(d) and "site-packages" in d:
            dirs.add(d)
    return sorted(os.path.realpath(d) for d in dirs if os.path.isdir(d))


def _blocked_ancestor(path: str) -> str | None:
    """The outermost ancestor of path that others may not traverse (mode o-x), if any."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        p = os.path.join(*parts[:i])
        try:
            if not os.stat(p).st_mode & 0o001:
                return p
        except OSError:
            return None
    return None


def _interpreter_reachable() -> bool:
    return _blocked_ancestor(os.path.realpath(sys.executable)) is None


# ---------------------------------------------------------------- the sandbox


def clean_env(
    workspace: Path, extra: Mapping[str, str] | None = None, tmpdir: str | None = None
) -> dict[str, str]:
    """The whole environment of a sandboxed command (nothing inherited from the agent)."""
    bindir = os.path.dirname(sys.executable)
    env = {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "TMPDIR": tmpdir or "/tmp",
        "TERM": "dumb",
    }
    for k, v in (extra or {}).items():
        if not k or not set(k) <= _ENV_NAME_OK:
            raise ToolError(f"invalid environment variable name {k!r}")
        env[k] = str(v)
    return env


class Sandbox:
    """Runs commands in one workspace. Cheap to create; detection is cached per process."""

    def __init__(
        self,
        workspace: Path,
        limits: Limits | None = None,
        *,
        hide: Iterable[str | os.PathLike[str]] = (),
        isolation: Isolation | None = None,
    ) -> None:
        self.workspace = Path(workspace).resolve()
        self.limits = limits or Limits()
        self.hide = [os.path.abspath(os.fspath(p)) for p in hide]
        self._isolation = isolation

    @classmethod
    def for_settings(cls, workspace: Path, settings: Any) -> Sandbox:
        return cls(workspace, Limits.from_settings(settings))

    async def isolation(self) -> Isolation:
        if self._isolation is None:
            self._isolation = await detect_isolation()
        return self._isolation

    async def run(
        self,
        command: str | Sequence[str],
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SandboxResult:
        """Run a shell command line (str) or an argv list; never raises for the command's
        own failures (they are in the result), only ToolError for a bad request."""
        import asyncio

        if isinstance(command, str):
            if not command.strip():
                raise ToolError("empty command")
            argv = ["/bin/sh", "-c", command]
            shown = command
        else:
            argv = [str(a) for a in command]
            if not argv:
                raise ToolError("empty command")
            shown = shlex.join(argv)
        if not self.workspace.is_dir():
            raise ToolError(f"workspace {self.workspace} does not exist")
        timeout = float(timeout_s if timeout_s is not None else self.limits.timeout_s)
        iso = await self.isolation()
        notes: list[str] = []
        uid = None
        if os.geteuid() == 0 and iso.mode != "user-ns":
            uid = sandbox_uid(self.workspace)
            if uid is None:
                notes.append(
                    "uid not dropped: no unprivileged uid is mapped in this user namespace"
                )
            elif iso.mode == "none" and not _interpreter_reachable():
                notes.append(
                    f"uid not dropped: the Python toolchain ({sys.executable}) is not readable by "
                    "other users and no mount namespace is available to expose it"
                )
                uid = None
            elif iso.mode == "none" and _blocked_ancestor(str(self.workspace)):
                notes.append(
                    f"uid not dropped: the workspace lies under {_blocked_ancestor(str(self.workspace))}, "
                    "which other users cannot enter, and no mount namespace is available"
                )
                uid = None
        elif iso.mounts:
            notes.append(
                "uid not dropped (agentd is not root): the command runs as the agent's user without "
                "capabilities; the agent's key, certificates and home are hidden by a mount namespace"
            )
        else:
            notes.append("uid not dropped: agentd does not run as root")
        if iso.mode == "none":
            notes.append(f"network not isolated ({iso.reason})")
            if uid is None:
                notes.append(
                    "the agent's certificate and key are readable by path (no mount namespace)"
                )

        hide = sorted(set(self.hide) | _PROTECTED)
        private_dirs = [d for d in _PRIVATE_DIRS if os.path.isdir(d)]
        expose = [str(self.workspace), *(d for d in _toolchain_dirs() if d != str(self.workspace))]
        # The agent's home (other keys, tokens, shell history) is masked too; what the command
        # needs below it (the workspace, the toolchain) is bound back.
        home = os.path.realpath(os.path.expanduser("~"))
        mask = [home] if home not in ("/", "") and os.path.isdir(home) else []
        tmpdir = "/tmp" if iso.mounts else str(self.workspace / ".tmp")
        spec: dict[str, Any] = {
            "argv": argv,
            "env": clean_env(self.workspace, env, tmpdir),
            "cwd": str(self.workspace),
            "uid": uid,
            "rlimits": self._rlimits(timeout, uid is not None),
            "mounts": iso.mounts,
            "private_dirs": private_dirs if iso.mounts else [],
            "hide": hide if iso.mounts else [],
            "expose": expose if iso.mounts else [],
            "mask": mask if iso.mounts else [],
            "lo": iso.network,
            "drop_caps": iso.mode == "user-ns",
        }
        if uid is not None:
            await asyncio.to_thread(_chown_tree, self.workspace, uid)
        if not iso.mounts:
            (self.workspace / ".tmp").mkdir(exist_ok=True)
            if uid is not None:
                os.chown(self.workspace / ".tmp", uid, uid)
        launcher = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
            "from agentd.sandbox import launch_main; launch_main()",
            json.dumps(spec),
        ]
        if iso.mode == "root-ns":
            full = [shutil.which("unshare") or "unshare", *_NS_FLAGS, "--", *launcher]
        elif iso.mode == "user-ns":
            full = [
                shutil.which("unshare") or "unshare",
                "--user",
                "--map-root-user",
                *_NS_FLAGS,
                "--",
                *launcher,
            ]
        else:
            full = launcher
        return await self._execute(full, shown, timeout, iso, uid, notes)

    def _rlimits(self, timeout: float, own_uid: bool) -> dict[str, int]:
        lim = self.limits
        cpu = lim.cpu_s if lim.cpu_s is not None else int(timeout) + 1
        out = {
            "CPU": max(1, cpu),
            "FSIZE": lim.file_size_mb * 1024 * 1024,
            "CORE": 0,
        }
        if lim.memory_mb > 0:  # 0: no address-space limit (e.g. for a Chromium-based renderer)
            out["AS"] = lim.memory_mb * 1024 * 1024
        if own_uid:
            out["NPROC"] = lim.processes
        return out

    async def _execute(
        self,
        full: list[str],
        shown: str,
        timeout: float,
        iso: Isolation,
        uid: int | None,
        notes: list[str],
    ) -> SandboxResult:
        import asyncio

        # Output goes to unlinked temporary files, not pipes: a background process that
        # keeps a pipe open cannot stall us, and RLIMIT_FSIZE bounds what it can write.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *full,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=str(self.workspace),
                    env=_launcher_env(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise ToolError(f"cannot start the sandbox: {exc}") from exc
            timed_out = False
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
                notes.insert(0, f"killed at time limit {timeout:g}s")
            finally:
                # Over, out of time or cancelled: nothing of the command may linger.
                _killpg(proc.pid)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                notes.append("the sandbox did not exit after SIGKILL")
            duration = time.monotonic() - started
            stdout, cut_out = _read_bounded(out, self.limits.output_bytes)
            stderr, cut_err = _read_bounded(err, self.limits.output_bytes)
        code = proc.returncode if proc.returncode is not None else -9
        sig = ""
        if code < 0:
            sig = _signame(-code)
        elif code > 128 and iso.mode != "none" and code - 128 < 65:
            sig = _signame(code - 128)  # a shell reports a killed child as 128+N
        if code == SETUP_FAILED_EXIT and "sandbox setup failed" in stderr:
            notes.append(stderr.strip().splitlines()[-1])
        if sig == "SIGXFSZ" or "File too large" in stderr or "File size limit exceeded" in stderr:
            notes.append(f"file size limit {self.limits.file_size_mb} MB reached")
        elif sig == "SIGXCPU":
            notes.append("CPU time limit exceeded")
        return SandboxResult(
            command=shown,
            exit_code=code,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            duration_s=duration,
            network_isolated=iso.network,
            uid_dropped=uid is not None,
            files_hidden=iso.mounts,
            notes=notes,
            truncated=cut_out or cut_err,
            signal=sig,
        )


def _launcher_env() -> dict[str, str]:
    """The launcher (python -I -S) needs no environment at all; give it a bare PATH."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _read_bounded(f: Any, limit: int) -> tuple[str, bool]:
    """The head and the tail of an output file, `limit` bytes in all; (text, cut)."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= limit:
        return f.read().decode(errors="replace"), False
    half = limit // 2
    head = f.read(half)
    f.seek(size - half)
    tail = f.read(half)
    text = (
        head.decode(errors="replace")
        + f"\n[... {size - 2 * half} bytes of output cut ...]\n"
        + tail.decode(errors="replace")
    )
    return text, True


# ---------------------------------------------------------------- the launcher (runs in the namespaces)

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


class _SetupError(Exception):
    pass


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise _SetupError(f"{what}: {os.strerror(e)}")


def _mount(
    libc: ctypes.CDLL,
    src: str,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    _check(
        libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {src} on {target}",
    )


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _setup_mounts(spec: dict[str, Any]) -> None:
    libc = _libc()
    uid = spec["uid"]
    expose: list[str] = spec["expose"]
    hide: list[str] = spec["hide"]
    # Directories to cover with a fresh tmpfs: the shared temp dirs, the protected
    # directories, and (when the uid changes) the ancestors it could not traverse.
    covers: dict[str, str] = {}
    for d in spec["private_dirs"]:
        covers[d] = "mode=1777,size=256m"
    for h in hide:
        if os.path.isdir(h) and not os.path.islink(h):
            covers[h] = "mode=000,size=4k"
    for m in spec.get("mask", []):
        if os.path.isdir(m) and m not in covers:
            covers[m] = "mode=755,size=4m"
    if uid is not None:
        for e in expose:
            blocked = _blocked_ancestor(e)
            if blocked and blocked not in covers:
                covers[blocked] = "mode=755,size=4m"
    # Open what must stay visible before anything is covered.
    fds = {e: os.open(e, os.O_PATH | os.O_DIRECTORY) for e in expose if os.path.isdir(e)}
    done: list[str] = []
    for target in sorted(covers, key=lambda p: (p.count("/"), p)):
        if any(_under(target, c) for c in done) and not os.path.isdir(target):
            continue  # inside an already covered directory: gone anyway
        _mount(libc, "tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV, covers[target])
        done.append(target)
    # Bind back what lives under a cover, shallow first.
    bound: list[str] = []
    for e in sorted(fds, key=lambda p: (p.count("/"), p)):
        if not any(_under(e, c) for c in done) or any(_under(e, b) for b in bound):
            continue
        if any(_under(e, h) for h in hide):
            continue  # never re-expose a protected directory
        bound.append(e)
        os.makedirs(e, mode=0o755, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fds[e]}", e, None, _MS_BIND | _MS_REC)
        if e != spec["cwd"]:
            with contextlib.suppress(_SetupError):  # read-only toolchain; best effort
                _mount(
                    libc,
                    "none",
                    e,
                    None,
                    _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
                )
    for fd in fds.values():
        os.close(fd)
    # Protected paths still visible (inside a re-exposed tree, or single files): files
    # are covered by an empty, unreadable placeholder (mode 000, owned by root).
    placeholder = "/tmp/.orchgpt-hidden" if "/tmp" in done else "/dev/null"
    if placeholder != "/dev/null":
        os.close(os.open(placeholder, os.O_CREAT | os.O_WRONLY, 0))
        os.chmod(placeholder, 0)
    for h in hide:
        if any(_under(e, h) for e in expose) or not os.path.lexists(h):
            continue
        if os.path.isdir(h):
            if h not in done:
                _mount(libc, "tmpfs", h, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=000,size=4k")
        else:
            _mount(libc, placeholder, h, None, _MS_BIND)


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, ifreq))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _drop_privileges(spec: dict[str, Any]) -> None:
    libc = _libc()
    if spec["uid"] is not None or spec["drop_caps"]:
        for cap in range(64):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break  # EINVAL past the last capability
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if spec["uid"] is not None:
        uid = int(spec["uid"])
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif spec["drop_caps"]:
        # capset(2): no effective, permitted or inheritable capability is left.
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        _check(libc.capset(header, data), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _set_rlimits(limits: dict[str, int], uid_dropped: bool) -> None:
    import resource

    for name, value in limits.items():
        res = getattr(resource, "RLIMIT_" + name)
        if name == "CPU":
            resource.setrlimit(res, (value, value + 1))
        elif name == "NPROC" and not uid_dropped:
            continue
        else:
            resource.setrlimit(res, (value, value))


def launch_main() -> None:
    """Entry point of the launcher process (argv[1] is the JSON spec)."""
    spec = json.loads(sys.argv[1])
    try:
        if spec["mounts"]:
            _setup_mounts(spec)
        if spec["lo"]:
            with contextlib.suppress(OSError):
                _loopback_up()
        os.chdir(spec["cwd"])
        _set_rlimits(spec["rlimits"], spec["uid"] is not None)
        _drop_privileges(spec)
    except (OSError, _SetupError, ValueError) as exc:
        sys.stderr.write(f"sandbox setup failed: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED_EXIT)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # python ignores these; the command must not
        signal.signal(sig, signal.SIG_DFL)
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        sys.stderr.write(f"sandbox: cannot run {argv[0]}: {exc.strerror}\n")
        sys.stderr.flush()
        os._exit(EXEC_FAILED_EXIT)
