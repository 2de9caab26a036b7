"""Separate network hosts on this machine: Linux network namespaces joined by a bridge.

Each test gets its own "switch" namespace holding a bridge, and one namespace per host, wired
to the bridge by a veth pair (``eth0`` in the host, ``pN`` on the switch), addressed
``10.77.0.N/24``. Nothing is added to the machine's own namespace, so tests running at the same
time never clash. Every namespace is deleted at teardown, with the processes started in it,
also when the test fails; namespaces left by a test process that died are removed by the next.

    from tests.support.netns import Net, netns_fixture  # noqa: F401  (the fixture `netns`)

    def test_x(netns: Net) -> None:
        d = netns.host("daemon")   # 10.77.0.1
        a = netns.host("agent")    # 10.77.0.2
        a.popen([...])             # a process whose only network is that host's
        a.cut(); a.restore()       # unplug / replug its cable

Each host has its own directory, ``host.home`` (``TMP/hosts/NAME``): a process started on a host
sees its own and none of the other hosts' (they are hidden under an empty tmpfs in its mount
namespace), so a path written on one host cannot be opened on another, as on real machines;
the rest of the filesystem is shared. The test itself sees everything.

Needs root and iproute2; the fixture skips, saying why, when either is missing.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
_PREFIX = "ogt"
_NAME = re.compile(rf"^{_PREFIX}(\d+)x\d+-")
_counter = 0


def _ip(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable() -> str:
    """Why namespaces cannot be made here, or "" when they can."""
    if os.geteuid() != 0:
        return "network-namespace hosts need root (ip netns add)"
    if shutil.which("ip") is None:
        return "network-namespace hosts need iproute2's `ip` on PATH"
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]


def _kill_all_in(ns: str) -> None:
    pids = _ip("netns", "pids", ns, check=False).stdout.split()
    for p in pids:
        try:
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_stale() -> None:
    """Namespaces of this fixture whose test process is gone (killed mid-test)."""
    for ns in _namespaces():
        m = _NAME.match(ns)
        if m and not _alive(int(m.group(1))):
            _kill_all_in(ns)
            _ip("netns", "del", ns, check=False)


@dataclass
class Host:
    """One network host: a namespace with one address on the test's bridge."""

    net: Net
    name: str
    ns: str
    addr: str
    port: str  # its cable's end on the switch
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        """This host's own directory: the only one of the hosts' directories it sees."""
        return self.net.root / self.name

    @property
    def prefix(self) -> list[str]:
        """Put before a command to run it on this host: in its network, and (``net.root`` set)
        with the other hosts' directories hidden under an empty tmpfs (a mount of `ip netns
        exec`'s own mount namespace: nothing leaks out)."""
        cmd = ["ip", "netns", "exec", self.ns]
        root = self.net.root
        if not self.net.private:
            return cmd
        own, keep = (
            shlex.quote(str(self.home)),
            shlex.quote(str(root.parent / f".{root.name}-{self.name}")),
        )
        script = (
            f"set -e; mkdir -p {own} {keep}; mount --bind {own} {keep}; "
            f"mount -t tmpfs -o mode=0755 hosts {shlex.quote(str(root))}; mkdir -p {own}; "
            f'mount --bind {keep} {own}; exec "$@"'
        )
        return [*cmd, "sh", "-c", script, "sh"]

    def popen(
        self,
        argv: list[str],
        log: IO[bytes] | int | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [*self.prefix, *argv],
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            cwd=cwd,
            env=env,
        )
        self.procs.append(p)
        return p

    def run(
        self,
        argv: list[str],
        timeout: float = 30,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)

    def cut(self) -> None:
        """Unplug this host's cable: its packets go nowhere (TCP connections stall, as on a
        real network), until `restore`."""
        _ip("-n", self.net.switch, "link", "set", self.port, "down")

    def restore(self) -> None:
        _ip("-n", self.net.switch, "link", "set", self.port, "up")

    @contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread in this host's network: sockets made meanwhile belong to the host
        (a server bound here keeps serving it from any thread)."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{self.ns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.ns}")
            try:
                yield
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the test's own network")
        finally:
            os.close(own)
            os.close(target)


class Net:
    """A switch and the hosts plugged into it; `close` removes everything."""

    def __init__(self, root: Path, private: bool = True) -> None:
        global _counter
        self.root, self.private = root, private
        root.mkdir(parents=True, exist_ok=True)
        _counter += 1
        self.tag = f"{_PREFIX}{os.getpid()}x{_counter}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def host(self, name: str) -> Host:
        """A new host (its address: 10.77.0.N, N counting from 1), or the one of that name."""
        if name in self.hosts:
            return self.hosts[name]
        n = len(self.hosts) + 1
        ns, port = f"{self.tag}-{name}", f"p{n}"
        _ip("netns", "add", ns)
        h = Host(self, name, ns, f"{SUBNET}.{n}", port)
        self.hosts[name] = h
        _ip(
            "-n",
            self.switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return h

    def close(self) -> None:
        for h in self.hosts.values():
            for p in h.procs:
                if p.poll() is None:
                    p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for ns in [*(h.ns for h in self.hosts.values()), self.switch]:
            _kill_all_in(ns)  # anything the test started there some other way
            _ip("netns", "del", ns, check=False)


@pytest.fixture(name="netns")
def netns_fixture(tmp_path: Path) -> Iterator[Net]:
    """A fresh set of network hosts for this test (see the module's docstring)."""
    why = unavailable()
    if why:
        pytest.skip(why)
    remove_stale()
    try:
        net = Net(tmp_path / "hosts")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield net
    finally:
        net.close()
