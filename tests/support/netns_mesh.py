"""The mesh spread over network hosts (tests/support/netns.py): a daemon on one host with a
server certificate naming its address, agents on others with their own certificates and
workspace roots, and the CLI (`python -m cli`, the worktree's) on another."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from orchgpt.certs import init_dir
from tests.support.mesh import ROOT, AgentProc, Daemon, issue, start_agent
from tests.support.netns import Host


def daemon_on(host: Host, tmp: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
    """`orchgpt serve` listening on the host's address (no local spawning unless asked), its
    certificates and data in the host's directory (its port file and log in ``tmp``)."""
    certs = host.home / "certs"
    init_dir(certs, hosts=[host.addr])  # the server certificate names the daemon's address
    issue(certs, "alice", "client")
    d = Daemon(
        workdir=tmp,
        certs=certs,
        data_dir=host.home / "data",
        args=list(args or ("--no-spawn",)),
        env=env or {},
        host=host.addr,
        prefix=host.prefix,
    )
    d.start()
    assert d.proc is not None
    host.procs.append(d.proc)  # killed at teardown
    return d


def agent_on(
    host: Host,
    d: Daemon,
    name: str,
    agent_type: str = "echo",
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[AgentProc, Path]:
    """`agentd` on the host, from its own directory (its certificates are issued there, only
    the CA's certificate is copied: what a user copies to another host); its workspace root."""
    home = host.home
    ws = home / "workspaces"
    a = start_agent(
        d,
        name,
        agent_type,
        cwd=home,
        extra_env=env,
        prefix=host.prefix,
        extra_args=["--workspace-root", str(ws), *(extra_args or [])],
    )
    host.procs.append(a.proc)
    return a, ws


def cli_argv(d: Daemon, host: Host) -> list[str]:
    """The worktree's CLI as alice on the host (her certificate copied there: the daemon's
    directory is not visible on other hosts), JSON events on stdout; add ``-c LINE``."""
    certs = host.home / "certs"
    if not (certs / "alice.pem").exists():
        certs.mkdir(parents=True, exist_ok=True)
        for name in ("ca.pem", "alice.pem", "alice-key.pem"):
            shutil.copy2(d.certs / name, certs / name)
    return [
        sys.executable,
        "-m",
        "cli",
        "--json",
        "--orchestrator",
        d.address,
        "--ca",
        str(certs / "ca.pem"),
        "--cert",
        str(certs / "alice.pem"),
        "--key",
        str(certs / "alice-key.pem"),
    ]


def cli_on(host: Host, d: Daemon, line: str, cwd: Path, timeout: float = 30) -> list[dict[str, Any]]:
    """Run one CLI command on the host as alice; its --json events (the exit code is checked)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    done = host.run([*cli_argv(d, host), "-c", line], timeout=timeout, cwd=cwd, env=env)
    if done.returncode != 0:
        raise AssertionError(f"`{line}` on {host.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
