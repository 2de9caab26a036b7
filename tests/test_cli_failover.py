"""autogpt given several daemons (``--orchestrator A,B``) uses the next when the first is
down; the REPL's toolbar shows the daemon it is on (issue 19). Real daemons, real agents."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from orchgpt_cli.connect import ConnectionSettings
from orchgpt_cli.render import plain
from orchgpt_cli.repl import Repl
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(90)


async def up(daemon_factory, tmp_path: Path, agents: list[AgentProc]) -> tuple[Daemon, Daemon]:  # type: ignore[no-untyped-def]
    """Two daemons, the first stopped, an echo agent on the second."""
    a = daemon_factory("--no-spawn", data_dir=tmp_path / "data-a").start()
    b = daemon_factory("--no-spawn", data_dir=tmp_path / "data-b").start()
    a.stop()
    agents.append(start_agent(b, "echo1"))

    async def ready() -> bool:
        async with b.client() as c:
            return bool(await c.list_agents())

    await await_for(ready, timeout=20, what="the agent")
    return a, b


async def test_oneshot_runs_on_the_second_daemon(daemon_factory, tmp_path: Path, agents: list[AgentProc]) -> None:  # type: ignore[no-untyped-def]
    a, b = await up(daemon_factory, tmp_path, agents)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env["ORCHGPT_CERTS"] = str(b.certs)
    for how in (["--orchestrator", f"{a.address},{b.address}"], []):
        run_env = env if how else {**env, "ORCHGPT_ADDRESS": f"{a.address},{b.address}"}
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchgpt_cli", *how, "-c", '/echo run "across"'],
            capture_output=True,
            text=True,
            timeout=60,
            env=run_env,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        assert "across" in r.stdout.splitlines()


async def test_repl_toolbar_shows_the_daemon_it_is_on(daemon_factory, tmp_path: Path, agents: list[AgentProc]) -> None:  # type: ignore[no-untyped-def]
    a, b = await up(daemon_factory, tmp_path, agents)
    with create_pipe_input() as inp:
        repl = Repl(
            ConnectionSettings(f"{a.address},{b.address}", str(b.certs)),
            input=inp,
            output=DummyOutput(),
            agents_refresh=0.3,
        )
        task = asyncio.create_task(repl.run())
        try:
            await await_for(
                lambda: repl.ctx.connected is True or task.done(),
                timeout=20,
                what="the REPL connected",
            )
            text = plain(repl.bottom_toolbar())
            assert f"orchgpt {b.address} ● connected" in text, text
            assert a.address not in text
        finally:
            inp.send_text("\x04")
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
