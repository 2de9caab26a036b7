"""The sandbox for generated code: run one command in a task's workspace, confined.

A command runs as a subprocess with:

* a wall-clock limit (the whole process group is killed at the limit: "killed at
  time limit Ns"), and RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (file size),
  RLIMIT_CORE=0 and, when it runs under its own uid, RLIMIT_NPROC;
* a clean environment (PATH, HOME=workspace, LANG, PYTHONDONTWRITEBYTECODE,
  PYTHONUNBUFFERED, TMPDIR) and nothing else: no API keys, no ORCHGPT_*, no
  certificate paths; stdin at EOF; cwd = workspace; output captured and bounded;
* the strongest isolation the machine allows, detected once per process:

  ``root-ns``  (agentd runs as root) new mount, pid, ipc, network and uts namespaces;
               the command runs under a uid of its own, allocated from a range for
               as long as it runs (`uids.UidAllocator`: no two live workspaces share
               one), with no capabilities and no_new_privs.
  ``user-ns``  (not root, unprivileged user namespaces allowed) the same namespaces
               inside a user namespace; the uid cannot change (the command runs as the
               agent's user, mapped to root inside, with every capability dropped).
  ``none``     no namespaces (or `SandboxPolicy.namespaces` is False). The command is
               refused (`WeakSandboxRefused`) unless the operator opted in with
               ``agentd --allow-weak-sandbox`` (``ORCHGPT_ALLOW_WEAK_SANDBOX=1``); then
               it runs with the limits only (and its own uid as root) and the result
               says what is missing.

With a mount namespace the command sees only an allow list (see `launcher`): the
system directories and the toolchain read-only, its workspace read-write, private
/tmp, /var/tmp, /run and /dev/shm. The certificates, the daemon's data, other tasks'
workspaces and the agent's home are not there at all. The loopback interface of the
private network namespace is up, so a service the command starts is reachable from
inside the same sandbox run (and from nowhere else). The IPC namespace dies with the
command, and with it any SysV shared memory, semaphore or message queue it made.

The namespace setup runs in `launcher.py`, started by unshare(1) as
``python -I -S launcher.py <LaunchSpec JSON>``. See docs/security-sandbox.md.
The operator's policy and the limits are in `policy`, the detection of the
isolation mode in `isolation`, what a command left in `results`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ToolError
from .isolation import NS_FLAGS, Isolation, detect_isolation
from .launcher import EXEC_FAILED_EXIT, SETUP_FAILED_EXIT, LaunchSpec
from .policy import WEAK_ENV, WEAK_FLAG, Limits, SandboxPolicy, WeakSandboxRefused
from .results import SandboxResult, summarize_tests
from .uids import UidLease, chown_tree

if TYPE_CHECKING:
    from ..settings import AgentSettings

__all__ = [
    "EXEC_FAILED_EXIT",
    "SETUP_FAILED_EXIT",
    "WEAK_ENV",
    "WEAK_FLAG",
    "Isolation",
    "LaunchSpec",
    "Limits",
    "SandboxPolicy",
    "SandboxResult",
    "WeakSandboxRefused",
    "detect_isolation",
    "summarize_tests",
]

LAUNCHER = Path(__file__).resolve().with_name("launcher.py")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
HOSTNAME = "sandbox"
_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


# ---------------------------------------------------------------- file system helpers


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


def clean_env(workspace: Path, extra: Mapping[str, str] | None = None, tmpdir: str | None = None) -> dict[str, str]:
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
        policy: SandboxPolicy | None = None,
    ) -> None:
        self.workspace = Path(workspace).resolve()
        self.limits = limits or Limits()
        self.policy = policy if policy is not None else SandboxPolicy.from_env()
        self.hide = sorted({os.path.abspath(os.fspath(p)) for p in hide} | set(self.policy.protected))
        self._isolation = isolation

    @classmethod
    def for_settings(cls, workspace: Path, settings: AgentSettings | None, limits: Limits | None = None) -> Sandbox:
        """A sandbox with the agent's limits and policy (`settings.sandbox_policy`)."""
        policy = getattr(settings, "sandbox_policy", None)
        return cls(workspace, limits or Limits.from_settings(settings), policy=policy)

    async def isolation(self) -> Isolation:
        if self._isolation is None:
            self._isolation = await detect_isolation(policy=self.policy)
        return self._isolation

    async def run(
        self,
        command: str | Sequence[str],
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SandboxResult:
        """Run a shell command line (str) or an argv list; never raises for the command's
        own failures (they are in the result), only ToolError for a bad request, and
        WeakSandboxRefused when it cannot be isolated and weak sandboxes are not allowed."""
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
        if iso.mode == "none" and not self.policy.allow_weak:
            raise WeakSandboxRefused(
                f"refusing to run generated code: no isolation is available here ({iso.reason}). "
                f"Start agentd with {WEAK_FLAG} (or {WEAK_ENV}=1) to run it anyway with "
                "resource limits only, or give the agent namespaces (see docs/security-sandbox.md)"
            )
        notes: list[str] = []
        own_uid = os.geteuid() == 0 and iso.mode != "user-ns"
        if own_uid and iso.mode == "none" and not _interpreter_reachable():
            notes.append(
                f"uid not dropped: the Python toolchain ({sys.executable}) is not readable by "
                "other users and no mount namespace is available to expose it"
            )
            own_uid = False
        elif own_uid and iso.mode == "none" and _blocked_ancestor(str(self.workspace)):
            notes.append(
                f"uid not dropped: the workspace lies under {_blocked_ancestor(str(self.workspace))}, "
                "which other users cannot enter, and no mount namespace is available"
            )
            own_uid = False
        if iso.mode == "user-ns":
            notes.append(
                "uid not dropped (agentd is not root): the command runs as the agent's user in a "
                "user namespace, without capabilities; it sees only its workspace, the system "
                "directories and the toolchain"
            )
        elif iso.mode == "none":
            notes.append(f"weak sandbox (allowed by {WEAK_FLAG}): limits only")
            if os.geteuid() != 0:
                notes.append("uid not dropped: agentd does not run as root")
            notes.append(f"network not isolated ({iso.reason})")
            notes.append("no IPC namespace: SysV shared memory and semaphores are the host's")
            if not own_uid:
                notes.append("the agent's certificate and key are readable by path (no mount namespace)")

        hide = list(self.hide)
        if self.policy.workspace_root:
            hide.append(os.path.abspath(self.policy.workspace_root))
        read_only = [*SYSTEM_DIRS, *_toolchain_dirs(), *self.policy.read_only]
        tmpdir = "/tmp" if iso.mounts else str(self.workspace / ".tmp")
        lease: UidLease | None = None
        allocator = self.policy.allocator() if own_uid else None
        if allocator is not None:
            lease = await asyncio.to_thread(allocator.acquire, self.workspace)
            if lease.shared_nobody:
                notes.append("no uid range is mapped here: the command runs as nobody, like every other task's")
        try:
            uid = lease.uid if lease is not None else None
            spec = LaunchSpec(
                argv=argv,
                env=clean_env(self.workspace, env, tmpdir),
                cwd=str(self.workspace),
                uid=uid,
                rlimits=self._rlimits(timeout, uid is not None),
                new_root=iso.mounts,
                read_only=read_only if iso.mounts else [],
                private_dirs=[*PRIVATE_DIRS] if iso.mounts else [],
                hide=sorted(set(hide)) if iso.mounts else [],
                loopback=iso.network,
                hostname=HOSTNAME if iso.mode != "none" else "",
                drop_caps=iso.mode != "none",
                tmpfs_mb=self._tmpfs_mb(),
                no_nested_userns=iso.mode == "user-ns",
            )
            if uid is not None:
                await asyncio.to_thread(chown_tree, self.workspace, uid, uid)
            if not iso.mounts:
                (self.workspace / ".tmp").mkdir(exist_ok=True)
                if uid is not None:
                    os.chown(self.workspace / ".tmp", uid, uid)
            launcher = [sys.executable, "-I", "-S", str(LAUNCHER), spec.to_json()]
            unshare = shutil.which("unshare") or "unshare"
            if iso.mode == "root-ns":
                full = [unshare, *NS_FLAGS, "--", *launcher]
            elif iso.mode == "user-ns":
                full = [unshare, "--user", "--map-root-user", *NS_FLAGS, "--", *launcher]
            else:
                full = launcher
            result = await self._execute(full, shown, timeout, iso, uid, notes)
        finally:
            if lease is not None and allocator is not None:
                await asyncio.shield(asyncio.to_thread(allocator.release, lease))
        return result

    def _tmpfs_mb(self) -> int:
        """The private /tmp (and SysV shared memory) may hold at most this much: it is
        memory that RLIMIT_AS does not count."""
        mem = self.limits.memory_mb
        return 256 if mem <= 0 else max(16, min(256, mem))

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
            isolation=iso.mode,
            uid=uid,
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
