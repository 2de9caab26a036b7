"""Real processes for integration tests: an `orchgpt serve` daemon and `agentd` agents.

Nothing here is mocked: a daemon is a subprocess listening with mutual TLS on an
ephemeral port; agents are subprocesses with their own certificates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchgpt.certs import CA, CertPaths, init_dir, paths_for
from orchgpt.client import MeshClient

from . import postgres

ROOT = Path(__file__).resolve().parents[2]


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def await_for(
    pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Daemon:
    """A running `orchgpt serve` subprocess."""

    workdir: Path
    certs: Path
    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path | None = None
    store_url: str = ""  # the --store URL given to the daemon ('' : its data dir's SQLite file)
    host: str = "127.0.0.1"  # the address it listens on
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS] (netns.py)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, port: int = 0, timeout: float = 20.0) -> Daemon:
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        self.log_path = self.workdir / f"orchgpt-{int(time.time() * 1000)}.log"
        store: list[str] = []
        if "--store" in self.args:
            self.store_url = self.args[self.args.index("--store") + 1]
        elif postgres.wanted():  # ORCHGPT_TEST_STORE=postgres: one database per data dir
            # a daemon in a network namespace (prefix) reaches the server by its unix socket
            self.store_url = postgres.database_for(self.data_dir, unix_socket=bool(self.prefix))
            store = ["--store", self.store_url]
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "orchgpt",
            "serve",
            "--listen",
            f"{self.host}:{port}",
            "--certs",
            str(self.certs),
            "--data-dir",
            str(self.data_dir),
            "--port-file",
            str(port_file),
            "--local-model",
            "off",
            "--heartbeat-interval",
            "0.5",
            "--grace-period",
            "3",
            *store,
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("ORCHGPT_ADDRESS", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: port_file.exists() or self.proc.poll() is not None, timeout, what="orchgpt to listen")  # type: ignore[union-attr]
        if self.proc.poll() is not None:
            raise RuntimeError(f"orchgpt exited with {self.proc.returncode}:\n{self.log()}")
        self.port = int(port_file.read_text())
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def client(self, name: str = "cli", timeout: float = 10.0) -> MeshClient:
        return MeshClient(self.address, paths_for(self.certs, name), timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        p = self.proc
        if p is None or p.poll() is not None:
            return p.returncode if p else 0
        p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            raise

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class AgentProc:
    """A hand-started `agentd` subprocess (a 'remote' agent)."""

    name: str
    agent_type: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def make_certs(directory: Path) -> Path:
    init_dir(directory)
    return directory


def issue(certs: Path, name: str, role: str = "agent", out: Path | None = None) -> CertPaths:
    ca = CA.load(certs)
    return ca.issue_to(out or certs, name, role)  # type: ignore[arg-type]


def start_agent(
    daemon: Daemon,
    name: str,
    agent_type: str = "echo",
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    prefix: list[str] | None = None,
) -> AgentProc:
    """Start `agentd` by hand, from its own directory, with its own certificate (``prefix``:
    e.g. a network host's, tests/support/netns.py)."""
    home = cwd or daemon.workdir / f"agent-{name}"
    home.mkdir(parents=True, exist_ok=True)
    certs = home / "certs"
    issue(daemon.certs, name, "agent", out=certs)
    (certs / "ca.pem").write_bytes((daemon.certs / "ca.pem").read_bytes())
    log_path = home / "agentd.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *(prefix or []),
                sys.executable,
                "-m",
                "agentd",
                "--type",
                agent_type,
                "--name",
                name,
                "--orchestrator",
                daemon.address,
                "--certs",
                str(certs),
                *(extra_args or []),
            ],
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return AgentProc(name, agent_type, proc, log_path)


def pids_matching(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]
