"""The sandbox launcher: runs inside the new namespaces and execs the command.

`Sandbox.run` starts it as ``python -I -S <this file> <LaunchSpec as JSON>`` under
unshare(1) (new mount, pid, ipc, network and uts namespaces; a user namespace too when
agentd is not root). It imports only the standard library and nothing of agentd, so it
starts fast and runs with an isolated interpreter.

With a mount namespace it builds the command's whole view of the file system from an
allow list, on a fresh tmpfs that becomes the root (pivot_root):

* read-only: the system directories (/usr, /etc, /bin, /lib...) and the toolchain;
* read-write: the task's workspace, and fresh, private tmpfs on /tmp, /var/tmp, /run
  (with /run/lock) and /dev/shm;
* /proc of the new pid namespace, and the device nodes null, zero, full, random,
  urandom, tty;
* nothing else: the certificates, the daemon's data, other tasks' workspaces and the
  agent's home do not exist there. A protected path that lies inside an allowed tree
  (say a certificate dir under /etc) is covered by an empty read-only tmpfs (a file by
  /dev/null).

Then it sets the limits, drops every capability (and, as root, switches to the task's
uid), sets no_new_privs and execs the command.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
from dataclasses import asdict, dataclass, field, fields

SETUP_FAILED_EXIT = 125  # the launcher could not set the sandbox up
EXEC_FAILED_EXIT = 127  # the command was not found or not executable


@dataclass(frozen=True)
class LaunchSpec:
    """Everything the launcher needs, passed from agentd as one JSON argument."""

    argv: list[str]
    env: dict[str, str]
    cwd: str  # the workspace: the only writable directory besides the private ones
    uid: int | None = None  # switch to this uid (= gid); None: keep the current one
    rlimits: dict[str, int] = field(default_factory=dict)  # "CPU" -> value, ...
    new_root: bool = False  # build the file system view below (needs a mount namespace)
    read_only: list[str] = field(default_factory=list)  # visible read-only (allow list)
    private_dirs: list[str] = field(default_factory=list)  # fresh tmpfs, writable
    hide: list[str] = field(default_factory=list)  # covered wherever they would show
    loopback: bool = False  # bring up lo in the private network namespace
    hostname: str = ""  # set in the private uts namespace
    drop_caps: bool = False  # drop every capability even without a uid switch
    tmpfs_mb: int = 256  # size of the private /tmp; also the cap on SysV shared memory
    no_nested_userns: bool = False  # inside our own user namespace: forbid creating more

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LaunchSpec:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("launch spec: a JSON object is required")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"launch spec: unknown fields {unknown}")
        return cls(**data)


# ---------------------------------------------------------------- system calls

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MNT_DETACH = 2
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SYS_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "arm64": 41,
    "riscv64": 41,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
    "i686": 217,
    "i386": 217,
    "armv7l": 218,
}
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_STAGE = "/tmp"  # where the new root is assembled (inside our own mount namespace)


class _Sys:
    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            # A program of its own (standard library only, not under agentd's AgentdError): a
            # failed system call is an OSError, and setup failures exit SETUP_FAILED_EXIT.
            raise OSError(f"{what}: {os.strerror(ctypes.get_errno())}")

    def mount(self, src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        self.check(
            self.libc.mount(
                src.encode(),
                target.encode(),
                fstype.encode() if fstype else None,
                ctypes.c_ulong(flags),
                data.encode() if data else None,
            ),
            f"mount {src} on {target}",
        )

    def tmpfs(self, target: str, options: str, extra: int = 0) -> None:
        self.mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV | extra, options)

    def bind(self, fd: int, target: str, read_only: bool) -> None:
        self.mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
        if read_only:
            # Flags the source mount has (and a user namespace locks) must be kept.
            keep = os.statvfs(target).f_flag & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
            self.mount("none", target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | keep)

    def pivot_root(self, new_root: str) -> None:
        """Make new_root the root and detach the old one entirely."""
        os.chdir(new_root)
        number = _SYS_PIVOT_ROOT.get(platform.machine())
        if number is None:
            raise OSError(f"pivot_root: no system call number known for {platform.machine()}")
        # No fallback to MS_MOVE + chroot: the old root would stay beneath, and a command
        # that gains CAP_SYS_CHROOT in a nested user namespace could look for a way out.
        self.check(self.libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
        self.check(self.libc.umount2(b".", _MNT_DETACH), "detach the old root")
        os.chdir("/")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _depth(p: str) -> tuple[int, str]:
    return (p.count("/"), p)


# ---------------------------------------------------------------- the new root


def build_root(spec: LaunchSpec, sys_: _Sys) -> None:
    """Assemble the command's view of the file system and pivot into it."""
    hide = [h for h in spec.hide if h not in ("/", "")]
    # Everything to bind is opened before anything is covered (the workspace may live
    # under /tmp, which the staging tmpfs covers).
    links: dict[str, str] = {}
    sources: dict[str, tuple[int, bool]] = {}  # path -> (O_PATH fd, read-only)
    wanted: set[str] = set()
    for d in spec.read_only:
        if os.path.islink(d) and os.path.dirname(d) == "/":
            links[d] = os.readlink(d)  # /bin -> usr/bin on merged-/usr systems
        wanted.add(os.path.realpath(d))
    for d in sorted(wanted, key=_depth):
        if any(_under(d, h) for h in hide):
            continue  # never expose a protected tree
        if not os.path.isdir(d) or any(_under(d, s) for s in sources):
            continue
        sources[d] = (os.open(d, os.O_PATH | os.O_DIRECTORY), True)
    ws_fd = os.open(spec.cwd, os.O_PATH | os.O_DIRECTORY)
    devices = {n: os.open(f"/dev/{n}", os.O_PATH) for n in _DEVICES if os.path.exists(f"/dev/{n}")}

    root = _STAGE
    sys_.tmpfs(root, "mode=755,size=16m")

    def at(p: str) -> str:
        return root + p

    small = min(64, spec.tmpfs_mb)
    for d in spec.private_dirs:
        os.makedirs(at(d), mode=0o755, exist_ok=True)
        size = {"/tmp": spec.tmpfs_mb, "/run": 16}.get(d, small)
        sys_.tmpfs(at(d), f"mode={'755' if d == '/run' else '1777'},size={size}m")
        if d == "/run":
            os.mkdir(at("/run/lock"))
            os.chmod(at("/run/lock"), 0o1777)
    for link, target in links.items():
        os.symlink(target, at(link))
    for d, (fd, ro) in sorted(sources.items(), key=lambda kv: _depth(kv[0])):
        os.makedirs(at(d), mode=0o755, exist_ok=True)
        sys_.bind(fd, at(d), ro)
    os.makedirs(at("/proc"), exist_ok=True)
    sys_.mount("/proc", at("/proc"), None, _MS_BIND | _MS_REC)  # the new pid namespace's
    _limit_sysv_shm(spec.tmpfs_mb)
    os.makedirs(at("/dev"), mode=0o755, exist_ok=True)
    for name, fd in devices.items():
        os.close(os.open(at(f"/dev/{name}"), os.O_CREAT | os.O_WRONLY, 0o666))
        sys_.mount(f"/proc/self/fd/{fd}", at(f"/dev/{name}"), None, _MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, at(f"/dev/{name}"))

    # Protected paths that contain the workspace are covered before it is bound (the
    # cover is traversable, so only the way down to the workspace shows); all others after.
    above = [h for h in hide if _under(spec.cwd, h) and h != spec.cwd]
    for h in sorted(above, key=_depth):
        if os.path.isdir(at(h)) and not os.path.islink(at(h)):
            sys_.tmpfs(at(h), "mode=711,size=4m")
    os.makedirs(at(spec.cwd), mode=0o755, exist_ok=True)
    sys_.bind(ws_fd, at(spec.cwd), read_only=False)
    for h in sorted(set(hide) - set(above), key=_depth):
        target = at(h)
        if not os.path.lexists(target) or os.path.islink(target):
            continue
        if os.path.isdir(target):
            sys_.tmpfs(target, "mode=000,size=4k", _MS_RDONLY)
        else:
            sys_.mount(at("/dev/null"), target, None, _MS_BIND)
    for fd in [ws_fd, *devices.values(), *(fd for fd, _ in sources.values())]:
        os.close(fd)

    sys_.pivot_root(root)
    sys_.mount("none", "/", None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


# ---------------------------------------------------------------- the rest of the setup


def _limit_sysv_shm(megabytes: int) -> None:
    """SysV shared memory lives outside RLIMIT_AS: cap it in the private IPC namespace
    (best effort: older kernels do not let a user namespace set these)."""
    for name, value in (("shmmax", megabytes << 20), ("shmall", (megabytes << 20) // 4096)):
        with contextlib.suppress(OSError):
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(str(value))


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, ifreq))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _drop_privileges(spec: LaunchSpec, sys_: _Sys) -> None:
    libc = sys_.libc
    if spec.uid is not None or spec.drop_caps:
        for cap in range(64):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break  # EINVAL past the last capability
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if spec.uid is not None:
        uid = int(spec.uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif spec.drop_caps:
        # capset(2): no effective, permitted or inheritable capability is left.
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        sys_.check(libc.capset(header, data), "capset")
    sys_.check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _set_rlimits(limits: dict[str, int], uid_dropped: bool) -> None:
    for name, value in limits.items():
        res = getattr(resource, "RLIMIT_" + name)
        if name == "CPU":
            resource.setrlimit(res, (value, value + 1))
        elif name == "NPROC" and not uid_dropped:
            continue
        else:
            resource.setrlimit(res, (value, value))


def launch(spec: LaunchSpec) -> None:
    sys_ = _Sys()
    try:
        if spec.new_root:
            build_root(spec, sys_)
        if spec.hostname:
            name = spec.hostname.encode()
            sys_.check(sys_.libc.sethostname(name, len(name)), "sethostname")
        if spec.loopback:
            with contextlib.suppress(OSError):
                _loopback_up()
        if spec.no_nested_userns:
            # Per user namespace: this limits ours and its children, never the host's.
            with contextlib.suppress(OSError), open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
        os.chdir(spec.cwd)
        _set_rlimits(spec.rlimits, spec.uid is not None)
        _drop_privileges(spec, sys_)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"sandbox setup failed: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED_EXIT)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # python ignores these; the command must not
        signal.signal(sig, signal.SIG_DFL)
    argv = spec.argv
    try:
        os.execvpe(argv[0], argv, spec.env)
    except OSError as exc:
        sys.stderr.write(f"sandbox: cannot run {argv[0]}: {exc.strerror}\n")
        sys.stderr.flush()
        os._exit(EXEC_FAILED_EXIT)


def main() -> None:
    try:
        spec = LaunchSpec.from_json(sys.argv[1])
    except (IndexError, ValueError, TypeError) as exc:
        sys.stderr.write(f"sandbox setup failed: bad launch spec: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED_EXIT)
    launch(spec)


if __name__ == "__main__":
    main()
