"""What happens when things die: agents killed mid-task, daemon restarts, shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from orchgpt.models import Action, Command, EventKind, TaskState
from tests.support.mesh import AgentProc, Daemon, await_for, pids_matching, start_agent, wait_for

pytestmark = pytest.mark.timeout(120)


async def collect(client, cmd: Command, sink: list) -> None:  # type: ignore[no-untyped-def]
    async for ev in client.submit(cmd):
        sink.append(ev)


async def n_agents(c, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await c.list_agents()) == n


async def test_agent_killed_mid_task_is_requeued_to_another_instance(
    daemon_factory,
    agents: list[AgentProc],  # type: ignore[no-untyped-def]
) -> None:
    # a SIGKILLed agent cannot be told from a network blip: its task is held for the reconnect grace
    d: Daemon = daemon_factory("--no-spawn", "--reconnect-grace", "1").start()
    workers = {n: start_agent(d, n) for n in ("worker-1", "worker-2")}
    agents.extend(workers.values())
    async with d.client() as c:
        await await_for(lambda: n_agents(c, 2), 30, what="two workers")
        events: list = []
        runner = asyncio.create_task(
            collect(c, Command("echo", Action.RUN, "survive", task_id="t-requeue", options={"delay": "2"}), events)
        )
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), 15, what="running")
        victim = next(e.agent_id for e in events if e.state == TaskState.RUNNING)
        survivor = next(n for n in workers if n != victim)
        workers[victim].proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(runner, 30)
    requeued = [e for e in events if e.data.get("requeued") == "true"]
    assert requeued and f"agent {victim} lost" in requeued[0].text
    final = events[-1]
    assert final.kind == EventKind.RESULT and final.state == TaskState.SUCCEEDED
    assert final.result and final.result.agent_id == survivor and final.result.output == "survive"
    assert final.result.data["attempt"] == "2"
    assert f"agent {victim} lost" in final.result.data["requeued"]


async def test_agent_killed_with_no_attempts_left_fails_with_a_reason(
    daemon_factory,
    agents: list[AgentProc],  # type: ignore[no-untyped-def]
) -> None:
    d: Daemon = daemon_factory("--no-spawn", "--max-attempts", "1", "--reconnect-grace", "1").start()
    a1 = start_agent(d, "fragile-1")
    agents.append(a1)
    async with d.client() as c:
        await await_for(lambda: n_agents(c, 1), 20, what="fragile-1")
        events: list = []
        runner = asyncio.create_task(collect(c, Command("echo", Action.RUN, "x", options={"delay": "30"}), events))
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), 15, what="running")
        a1.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(runner, 20)
    final = events[-1]
    assert final.state == TaskState.FAILED
    assert "agent fragile-1 lost" in final.text and "gave up after 1 attempts" in final.text


async def test_a_crashed_local_agent_is_restarted_and_its_task_rerun(daemon: Daemon) -> None:
    async with daemon.client() as c:
        events: list = []
        runner = asyncio.create_task(collect(c, Command("echo", Action.RUN, "again", options={"delay": "1"}), events))
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), 20, what="running")
        [agent] = await c.list_agents()
        [pid] = pids_matching(f"--name {agent.agent_id}")
        import os

        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(runner, 40)
    assert events[-1].state == TaskState.SUCCEEDED
    assert any(e.data.get("requeued") == "true" for e in events)
    assert '"agent_crashed"' in daemon.log()


async def test_agents_reconnect_by_themselves_after_a_daemon_restart(
    daemon_factory,
    agents: list[AgentProc],  # type: ignore[no-untyped-def]
) -> None:
    d: Daemon = daemon_factory("--no-spawn").start()
    a = start_agent(d, "steady-1")
    agents.append(a)
    async with d.client() as c:
        await await_for(lambda: n_agents(c, 1), 20, what="steady-1")
    port = d.port
    assert d.stop() == 0
    d.start(port=port)  # same address, new process
    async with d.client() as c:
        await await_for(lambda: n_agents(c, 1), 30, what="steady-1 to reconnect")
        events: list = []
        await asyncio.wait_for(collect(c, Command("echo", Action.RUN, "welcome back"), events), 20)
    assert events[-1].result and events[-1].result.agent_id == "steady-1"
    assert a.proc.poll() is None
    assert '"event": "registered"' in a.log()


async def test_sigterm_exits_cleanly_with_no_spawned_agent_left(daemon: Daemon) -> None:
    async with daemon.client() as c:
        for _ in range(2):
            events: list = []
            await asyncio.wait_for(collect(c, Command("echo", Action.RUN, "hi"), events), 30)
        agent_ids = [a.agent_id for a in await c.list_agents()]
    assert agent_ids
    assert all(pids_matching(f"--name {a}") for a in agent_ids)
    assert daemon.stop(signal.SIGTERM) == 0
    wait_for(lambda: not any(pids_matching(f"--name {a}") for a in agent_ids), 10, what="spawned agents to exit")
    lines = [json.loads(x) for x in daemon.log().splitlines() if x.startswith("{")]
    assert any(x["event"] == "shutting_down" for x in lines)
    assert lines[-1]["event"] == "stopped"


async def test_sigterm_lets_a_running_task_finish_within_the_grace_period(daemon: Daemon) -> None:
    async with daemon.client() as c:
        events: list = []
        runner = asyncio.create_task(
            collect(c, Command("echo", Action.RUN, "finish me", options={"delay": "1"}), events)
        )
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), 20, what="running")
        daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        await asyncio.wait_for(runner, 15)
    assert events[-1].state == TaskState.SUCCEEDED and events[-1].text == "finish me"
    assert daemon.proc.wait(15) == 0  # type: ignore[union-attr]


def test_serve_without_certificates_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchgpt",
            "serve",
            "--certs",
            str(tmp_path / "none"),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "not found" in r.stderr and "orchgpt certs init" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "orchgpt", "serve", "--listen", "nonsense"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 1 and "expected HOST:PORT" in r.stderr


async def test_sigkill_of_the_daemon_leaves_no_spawned_agent_behind(daemon: Daemon) -> None:
    async with daemon.client() as c:
        events: list = []
        await asyncio.wait_for(collect(c, Command("echo", Action.RUN, "hi"), events), 30)
        agent_ids = [a.agent_id for a in await c.list_agents()]
    assert agent_ids and all(pids_matching(f"--name {a}") for a in agent_ids)
    daemon.kill()  # SIGKILL: no shutdown code runs in orchgpt
    wait_for(
        lambda: not any(pids_matching(f"--name {a}") for a in agent_ids),
        10,
        what="spawned agents to die with their daemon",
    )


async def test_an_idle_agent_keeps_its_registration_with_a_short_heartbeat_interval(
    daemon_factory,
    agents: list[AgentProc],  # type: ignore[no-untyped-def]
) -> None:
    d: Daemon = daemon_factory("--no-spawn").start()  # heartbeat interval 0.5 s: lost after 1.5 s of silence
    a = start_agent(d, "quiet-1")
    agents.append(a)
    async with d.client() as c:
        await await_for(lambda: n_agents(c, 1), 20, what="quiet-1")
        await asyncio.sleep(4)  # longer than the agent's default interval (5 s) minus the limit
        assert await n_agents(c, 1)
    assert '"agent_lost"' not in d.log()
    assert a.log().count('"event": "registered"') == 1
