"""The one-shot CLI tests' world: a daemon with echo agents (module scope) and the CLI run as a
subprocess against it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt.certs import init_dir
from tests.support.mesh import Daemon


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (the CLI's runs are independent sessions)."""
    root = tmp_path_factory.mktemp("cli-oneshot")
    certs = root / "certs"
    init_dir(certs)
    d = Daemon(workdir=root, certs=certs, data_dir=root / "data")
    d.start()
    yield d
    d.kill()


def env_for(mesh: Daemon, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update({"ORCHGPT_ADDRESS": mesh.address, "ORCHGPT_CERTS": str(mesh.certs), **extra})
    return env


def cli(
    mesh: Daemon,
    *args: str,
    stdin: str = "",
    timeout: float = 60,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchgpt_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or env_for(mesh),
        cwd=cwd or mesh.workdir,
    )


async def tasks_in(mesh: Daemon, session: str = "") -> list:  # type: ignore[type-arg]
    async with mesh.client() as c:
        return await asyncio.wait_for(c.list_tasks(limit=500, session_id=session), 10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
