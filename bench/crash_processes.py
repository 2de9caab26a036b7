"""The crash-recovery scenario's processes: the daemon and the echo agents it kills and restarts,
their certificates, and what the agents' logs say they completed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from orchgpt.certs import CA, paths_for
from orchgpt.client import MeshClient

ROOT = Path(__file__).resolve().parent.parent


class ScenarioError(Exception):
    """The scenario could not be run (a process did not start, a wait timed out)."""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRPC_VERBOSITY": "ERROR", **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("ORCHGPT_ADDRESS", None)
    return env


class Daemon:
    def __init__(
        self, workdir: Path, certs: Path, data_dir: Path, extra: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.workdir, self.certs, self.data_dir, self.extra = workdir, certs, data_dir, extra
        self.env = env or {}  # more environment for the daemon
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.logs: list[Path] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0, timeout: float = 60.0) -> None:
        port_file = self.workdir / "orchgpt.port"
        port_file.unlink(missing_ok=True)
        log = self.workdir / f"orchgpt-{len(self.logs) + 1}.log"
        self.logs.append(log)
        cmd = [
            sys.executable,
            "-m",
            "orchgpt",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--certs",
            str(self.certs),
            "--data-dir",
            str(self.data_dir),
            "--port-file",
            str(port_file),
            "--local-model",
            "off",
            "--log-format",
            "json",
            *self.extra,
        ]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, env=_env(self.env)
            )
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise ScenarioError(f"orchgpt exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ScenarioError(f"orchgpt did not listen within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def log_tail(self, n: int = 30) -> str:
        if not self.logs or not self.logs[-1].exists():
            return ""
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-n:])

    def sigkill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def client(self) -> MeshClient:
        return MeshClient(self.address, paths_for(self.certs, "cli"), timeout=15)

    def log_events(self, event: str) -> list[dict[str, object]]:
        return [r for log in self.logs for r in _json_lines(log) if r.get("event") == event]


def _json_lines(path: Path) -> list[dict[str, object]]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def init_certs(certs: Path) -> None:
    """The CA, server and CLI certificates, made by the real `orchgpt certs init`."""
    r = subprocess.run(
        [sys.executable, "-m", "orchgpt", "certs", "init", "--dir", str(certs)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    if r.returncode != 0:
        raise ScenarioError(f"orchgpt certs init failed: {r.stderr or r.stdout}")


def start_agents(workdir: Path, certs: Path, address: str, n: int) -> list[subprocess.Popen[bytes]]:
    """Start (or start again: same names, certificates, journals; logs appended) n echo agents."""
    ca = CA.load(certs)
    procs = []
    for i in range(n):
        name = f"crash-echo-{i}"
        home = workdir / "agents" / name
        home.mkdir(parents=True, exist_ok=True)
        if not (home / f"{name}.pem").exists():
            ca.issue_to(home, name, "agent")
            (home / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
        with (home / "agentd.log").open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "agentd",
                        "--type",
                        "echo",
                        "--name",
                        name,
                        "--orchestrator",
                        address,
                        "--certs",
                        str(home),
                        "--workspace-root",
                        str(home / "workspaces"),
                    ],
                    cwd=home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_env(),
                )
            )
    return procs


def agent_completions(workdir: Path, data_dir: Path) -> Counter[str]:
    """How many times each task id finished successfully in any agent (from the agents' logs)."""
    logs = [*(workdir / "agents").glob("*/agentd.log"), *(data_dir / "logs").glob("*.log")]
    done: Counter[str] = Counter()
    for log in logs:
        for r in _json_lines(log):
            if r.get("event") == "task_done" and r.get("state") == "succeeded":
                done[str(r.get("task_id"))] += 1
    return done


def _sigkill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(10)
