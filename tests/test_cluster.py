"""Two daemons on one PostgreSQL act as one mesh (issue 19, docs/scaling.md): a task
submitted on one runs on an agent connected to the other, its events reach the watcher
in order, and /agents on either daemon lists every agent with its daemon.

Real daemons (``--store postgresql://... --cluster``), a real PostgreSQL server, agentd
subprocesses, the CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(120)


def cluster_of(daemon_factory, postgres_url: str, tmp_path: Path, n: int = 2) -> list[Daemon]:  # type: ignore[no-untyped-def]
    return [
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(n)
    ]


def autogpt(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env["ORCHGPT_CERTS"] = str(d.certs)
    return subprocess.run(
        [sys.executable, "-m", "orchgpt_cli", "--orchestrator", d.address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=d.workdir,
    )


async def agents_on(d: Daemon) -> dict[str, str]:
    async with d.client() as c:
        return {a.agent_id: a.host for a in await asyncio.wait_for(c.list_agents(), 10)}


async def test_a_task_submitted_on_the_second_daemon_runs_on_the_firsts_agent(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster_of(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: agents_on(b), timeout=20, what="the agent listed on the second daemon")
    async with b.client() as c:  # AgentInfo.daemon names the daemon it is connected to
        listed = [(x.agent_id, x.daemon, x.host) for x in await c.list_agents()]
    assert [x[:2] for x in listed] == [("echo-a", a.address)] and "via" not in listed[0][2], listed
    async with a.client() as c:  # and its own daemon names itself
        assert [(x.agent_id, x.daemon) for x in await c.list_agents()] == [("echo-a", a.address)]
    r = await asyncio.to_thread(autogpt, b, "-c", '/echo run "across"')
    assert r.returncode == 0, r.stderr + b.log()[-3000:]
    assert "across" in r.stdout.splitlines(), r.stdout
    listing = await asyncio.to_thread(autogpt, b, "-c", "/agents")
    shown = listing.stdout + listing.stderr  # the DAEMON column names A
    assert listing.returncode == 0 and "echo-a" in shown and "DAEMON" in shown and a.address in shown, shown
    # the run happened on the agent of the first daemon, and the second has it in /history
    assert "task_claimed" in a.log() and "task_offered" in b.log()
    hist = await asyncio.to_thread(autogpt, b, "-c", "/history 5")
    assert hist.returncode == 0 and "across" in hist.stdout, hist.stdout


async def test_the_watcher_on_the_other_daemon_gets_every_event_once_in_order(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster_of(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: agents_on(b), timeout=20, what="the agent listed on the second daemon")
    async with b.client() as c:
        seen = [ev async for ev in c.submit(Command("echo", input="many", options={"delay": "1"}))]
        assert seen[-1].kind == EventKind.RESULT and seen[-1].result is not None
        assert seen[-1].result.ok and seen[-1].result.output == "many"
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # no gap, no duplicate
        task_id = seen[0].task_id
        _, stored, _ = await c.get_task(task_id)
    assert [e.seq for e in stored] == [e.seq for e in seen]
    assert {e.agent_id for e in seen if e.kind == EventKind.LOG} <= {"echo-a", ""}
    async with a.client() as c:  # the first daemon sees the same task, finished
        t, _, _ = await c.get_task(task_id, with_events=False)
        assert t.state.terminal and t.result is not None and t.result.output == "many"


async def test_cluster_needs_postgres(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory("--cluster", "--store", str(tmp_path / "x.db"))
    with pytest.raises(RuntimeError, match="--cluster needs a PostgreSQL store"):
        await asyncio.to_thread(d.start)


async def test_cancel_on_the_other_daemon_stops_the_agent_and_the_queued_task(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster_of(daemon_factory, postgres_url, tmp_path)
    agent = start_agent(a, "echo-a")
    agents.append(agent)
    await await_for(lambda: agents_on(b), timeout=20, what="the agent listed on the second daemon")
    seen: dict[str, list] = {"long": [], "queued": []}  # type: ignore[type-arg]

    async def run(task_id: str) -> None:
        async with b.client(timeout=60) as c:
            cmd = Command("echo", input=task_id, task_id=task_id, options={"delay": "30"})
            async for ev in c.submit(cmd):
                seen[task_id].append(ev)

    long = asyncio.create_task(run("long"))
    await await_for(
        lambda: any("waiting 30s" in e.text for e in seen["long"]),
        timeout=20,
        what="the long task running on the first daemon's agent",
    )
    queued = asyncio.create_task(run("queued"))  # offered; A's only agent is busy
    await await_for(lambda: bool(seen["queued"]), timeout=10, what="the second task queued")
    async with b.client() as c:
        await c.cancel("queued", "not needed")
        await c.cancel("long", "changed my mind")
    await asyncio.wait_for(asyncio.gather(long, queued), 20)
    for task_id in ("long", "queued"):
        last = seen[task_id][-1]
        assert last.kind == EventKind.RESULT and last.result is not None, seen[task_id]
        assert last.result.state == "cancelled", last.result
    await await_for(
        lambda: "task_cancel_requested" in agent.log(),
        timeout=10,
        what="the agent told to stop the task",
    )
    assert '"queued"' not in agent.log()  # the queued one never reached it


async def test_agents_of_a_dead_daemon_are_listed_as_lost(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster_of(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(a, "echo-a"))  # A's address only: it cannot fail over
    await await_for(lambda: agents_on(b), timeout=20, what="the agent listed on the second daemon")
    a.stop(signal.SIGKILL)

    async def lost() -> bool:
        async with b.client() as c:
            return any(
                x.agent_id == "echo-a" and x.state == "lost" and x.daemon == a.address for x in await c.list_agents()
            )

    await await_for(lost, timeout=20, what="echo-a listed as lost, its daemon not answering")


async def test_a_task_id_resubmitted_on_either_daemon_runs_once(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster_of(daemon_factory, postgres_url, tmp_path)
    agent = start_agent(a, "echo-a")
    agents.append(agent)
    await await_for(lambda: agents_on(b), timeout=20, what="the agent listed on the second daemon")
    results: list[str] = []

    async def submit(d: Daemon) -> None:
        async with d.client(timeout=60) as c:
            cmd = Command("echo", input="once", task_id="idem-1", options={"delay": "2"})
            async for ev in c.submit(cmd):
                if ev.kind == EventKind.RESULT and ev.result is not None:
                    results.append(f"{ev.result.state}:{ev.result.output}")

    first = asyncio.create_task(submit(b))
    await await_for(lambda: "task_claimed" in a.log(), timeout=20, what="the task claimed by A")
    await asyncio.wait_for(asyncio.gather(first, submit(a), submit(b)), 40)
    assert results == ["succeeded:once"] * 3, results
    assert agent.log().count('"task_done"') == 1  # it ran once
