"""Supervision of spawned agents that tells the user (issue 11, findings 4 and 6).

Real daemons, real spawned `agentd` processes, real certificates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.agent_types import discover
from orchgpt.certs import paths_for
from orchgpt.client import MeshClient
from orchgpt.config import Settings
from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, EventKind, TaskState
from tests.support.mesh import Daemon, await_for, wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


async def run_task(client, cmd: Command, timeout: float = 30):  # type: ignore[no-untyped-def]
    events = []

    async def go() -> None:
        async for ev in client.submit(cmd):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


def result_of(events):  # type: ignore[no-untyped-def]
    final = events[-1]
    assert final.kind == EventKind.RESULT and final.result is not None, events
    return final.result


def waiting_notes(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.text for e in events if e.kind == EventKind.STATUS and e.text.startswith("waiting for")]


# ---- finding 4: a daemon started with other certificates, no --data-dir -----------------------


class Serve:
    """`orchgpt serve` exactly as a user types it: no --data-dir, HOME pointing at a tmp dir."""

    def __init__(self, home: Path, certs: str, *extra: str) -> None:
        self.home, self.certs = home, home / certs
        port_file = home / "port"
        port_file.unlink(missing_ok=True)
        self.log = home / f"serve-{certs}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchgpt",
                    "serve",
                    "--certs",
                    certs,
                    "--listen",
                    "127.0.0.1:0",
                    "--port-file",
                    str(port_file),
                    "--local-model",
                    "off",
                    "--heartbeat-interval",
                    "0.5",
                    *extra,
                ],
                cwd=home,
                env=user_env(home),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: port_file.exists() or self.proc.poll() is not None, 30, what="orchgpt to listen")
        assert self.proc.poll() is None, self.log.read_text()
        self.address = f"127.0.0.1:{int(port_file.read_text())}"

    def client(self) -> MeshClient:
        return MeshClient(self.address, paths_for(self.certs, "cli"), timeout=10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    return env


def certs_init(home: Path, d: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "orchgpt", "certs", "init", "--dir", d],
        cwd=home,
        env=user_env(home),
        check=True,
        capture_output=True,
        timeout=60,
    )


async def test_a_daemon_started_with_another_ca_runs_local_agents(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    certs_init(home, "a")
    first = Serve(home, "a")
    try:
        async with first.client() as c:
            assert result_of(await run_task(c, Command("echo", Action.RUN, "first"))).output == "first"
    finally:
        assert first.stop() == 0
    data_dir = home / ".local" / "share" / "orchgpt"
    assert (data_dir / "orchgpt.db").exists()  # the per-user data dir was used
    certs_init(home, "b")
    second = Serve(home, "b")
    try:
        async with second.client() as c:
            events = await run_task(c, Command("echo", Action.RUN, "x"), timeout=25)
            assert result_of(events).output == "x"
    finally:
        assert second.stop() == 0


# ---- a spawned agent that never registers -----------------------------------------------------

HANG = """
import os, sys, time
if os.environ.get("ORCHGPT_SPAWNED") == "1":
    print("agentd: cannot reach the orchestrator (this test holds it before it registers)", flush=True)
    time.sleep(600)
"""


async def test_an_agent_that_never_registers_fails_its_tasks_with_its_last_words(
    daemon_factory, tmp_path: Path
) -> None:
    hang = tmp_path / "hang"
    hang.mkdir()
    (hang / "sitecustomize.py").write_text(HANG)
    env = {"PYTHONPATH": os.pathsep.join([str(hang), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    d: Daemon = daemon_factory("--spawn-deadline", "3", env=env).start()
    async with d.client() as c:
        events = await run_task(c, Command("echo", Action.RUN, "never"), timeout=30)
    r = result_of(events)
    assert r.state == TaskState.FAILED
    assert "did not register within 3s" in r.error and "cannot reach the orchestrator" in r.error, r.error
    assert waiting_notes(events) == ["waiting for an echo agent: 0 connected, 1 starting"]
    assert '"agent_start_timeout"' in d.log()
    async with d.client() as c:
        assert await c.list_agents() == []
    wait_for(lambda: not [p for p in _children(d.proc.pid)], 10, what="the stuck agent to be gone")  # type: ignore[union-attr]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


# ---- what a queued task waits for -------------------------------------------------------------


async def test_a_queued_task_is_told_what_it_waits_for_once_per_change(daemon_factory) -> None:
    d: Daemon = daemon_factory("--max-local-agents", "1").start()
    async with d.client() as c:
        first = await run_task(c, Command("echo", Action.RUN, "one"))
        assert waiting_notes(first) == ["waiting for an echo agent: 0 connected, 1 starting"]
        slow = asyncio.create_task(run_task(c, Command("echo", Action.RUN, "slow", options={"delay": "4"})))
        await await_for(lambda: _busy(c), timeout=10, what="the echo agent to be busy")
        queued = await run_task(c, Command("echo", Action.RUN, "after"))
        assert result_of(queued).output == "after"
        assert waiting_notes(queued) == ["waiting for an echo agent: 1 connected (busy), 0 starting"]
        note = next(e for e in queued if e.text.startswith("waiting for"))
        assert note.state == TaskState.QUEUED
        assert note.data == {"waiting_for": "echo", "connected": "1", "starting": "0", "waiting_for_slot": "0"}
        assert result_of(await slow).output == "slow"


async def _busy(c: MeshClient) -> bool:
    return any(a.state == "busy" for a in await c.list_agents())


# ---- finding 6: local agent slots are given back ------------------------------------------------


def test_the_default_limit_fits_every_built_in_type() -> None:
    types = asyncio.run(discover())  # what the daemon learns from `agentd --list-types`
    assert (
        Settings().max_local_agents >= len(types) == 14
    )  # the nine agents, workflow, assistant, user_proxy, graph, blocks


async def test_one_slot_serves_echo_git_echo_one_after_another(daemon_factory) -> None:
    d: Daemon = daemon_factory("--max-local-agents", "1").start()
    async with d.client() as c:
        assert result_of(await run_task(c, Command("echo", Action.RUN, "a"))).output == "a"
        git = result_of(await run_task(c, Command("git", Action.RUN, "first commit"), timeout=40))
        assert git.state == TaskState.SUCCEEDED, git.error
        assert result_of(await run_task(c, Command("echo", Action.RUN, "b"), timeout=40)).output == "b"
        agents = await c.list_agents()
        assert len(agents) <= 1
    assert '"agent_stopping"' in d.log() and "making room" in d.log()


async def test_a_task_for_another_type_waits_for_a_busy_slot_instead_of_being_refused(daemon_factory) -> None:
    d: Daemon = daemon_factory("--max-local-agents", "1").start()
    async with d.client() as c:
        slow = asyncio.create_task(run_task(c, Command("echo", Action.RUN, "slow", options={"delay": "4"})))
        await await_for(lambda: _busy(c), timeout=15, what="the echo agent to be busy")
        git = await run_task(c, Command("git", Action.RUN, "commit"), timeout=40)
        assert result_of(git).state == TaskState.SUCCEEDED, result_of(git).error
        assert waiting_notes(git) == [
            "waiting for a git agent: 0 connected, 1 starting (waiting for a free local agent slot: all 1 in use)",
            "waiting for a git agent: 0 connected, 1 starting",
        ]
        assert result_of(await slow).output == "slow"


async def test_idle_local_agents_stop_and_give_their_slot_back(daemon_factory) -> None:
    d: Daemon = daemon_factory("--local-idle-timeout", "2").start()
    async with d.client() as c:
        assert result_of(await run_task(c, Command("echo", Action.RUN, "a"))).output == "a"

        async def none_left() -> bool:
            return await c.list_agents() == []

        await await_for(none_left, timeout=15, what="the idle agent to stop")
        assert result_of(await run_task(c, Command("echo", Action.RUN, "b"))).output == "b"
    stops = [ln for ln in d.log().splitlines() if '"agent_stopping"' in ln]
    assert stops and "idle for" in stops[0], d.log()[-2000:]


async def test_a_zero_limit_still_refuses_clearly(daemon_factory) -> None:
    d: Daemon = daemon_factory("--max-local-agents", "0").start()
    async with d.client() as c:
        with pytest.raises(ClientError) as ei:
            await run_task(c, Command("echo", Action.RUN, "x"))
    assert ei.value.code == "FAILED_PRECONDITION" and "limit is 0" in str(ei.value)


# ---- a busy local agent waiting on its own sub-tasks never starves them of a slot -------------


class _Link:
    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *a, **k: None  # every AgentLink method: nothing to send in this unit test


def test_a_busy_local_agent_waiting_on_queued_sub_tasks_is_found() -> None:
    from collections import deque

    from orchgpt.mesh import Mesh, Registration
    from orchgpt.models import Task
    from orchgpt.store import MemoryStore
    from orchgpt.waiting import waited_on_by_local

    mesh = Mesh(MemoryStore(), builtin_types=("manager", "architect", "echo"))
    mesh.register("local-manager-1", Registration("manager"), _Link())  # type: ignore[arg-type]
    entry = mesh.agents["local-manager-1"]
    entry.info.local = True
    entry.info.current_task, entry.info.running_tasks = "m", ["m"]
    tasks = [
        Task(task_id="m", agent_type="manager", state=TaskState.RUNNING, agent_id="local-manager-1"),
        Task(task_id="r", agent_type="echo", parent_task_id="m", state=TaskState.RUNNING, agent_id="remote-1"),
        Task(task_id="a", agent_type="architect", parent_task_id="r"),  # a grandchild
        Task(task_id="e", agent_type="echo"),
    ]
    for t in tasks:
        mesh.active[t.task_id] = t
    mesh.queues.queues["architect"] = deque(["a"])
    mesh.queues.queues["echo"] = deque(["e"])
    assert waited_on_by_local(mesh, "architect") == "local-manager-1"
    assert waited_on_by_local(mesh, "echo") == ""  # not a descendant: it may wait for a slot
    entry.info.local = False  # a hand-started manager holds no local slot
    assert waited_on_by_local(mesh, "architect") == ""


async def test_a_start_waited_on_by_every_busy_local_agent_goes_past_the_limit(tmp_path: Path) -> None:
    """The spawner alone (real CA, real agentd processes), the mesh's answers given as a manager
    would have them: its only slot is held by a busy agent that waits for a git sub-task."""
    from orchgpt.certs import CA
    from orchgpt.spawner import Spawner
    from tests.support.mesh import make_certs

    ca = CA.load(make_certs(tmp_path / "certs"))
    sp = Spawner(
        ca,
        tmp_path / "data" / "agents",
        lambda: "127.0.0.1:9",
        1,
        frozenset({"manager", "git"}),
        log_dir=tmp_path / "data" / "logs",
        spawn_deadline=60,
    )
    busy: dict[str, bool] = {}
    sp.attach(
        is_idle=lambda a: not busy.get(a, False),
        withdraw=lambda a: False,
        waited_on_by=lambda t: next(iter(busy)) if t == "git" and busy else "",
    )
    try:
        sp.spawn("manager")
        manager = next(iter(sp.agents))
        sp.registered(manager)  # as the mesh tells it
        busy[manager] = True
        assert not sp.can_spawn("manager") and sp.can_spawn("git")
        sp.spawn("git")
        git = next(a for a in sp.agents if a != manager)
        await await_for(
            lambda: sp.agents[git].has_slot and sp.agents[git].proc is not None,
            10,
            what="the git start to go past the limit",
        )
        assert sum(a.has_slot for a in sp.agents.values()) == 2
        # once the manager is idle again, the spawner gets back under the limit on its own
        busy[manager] = False
        sp.registered(git)
        sp.withdraw = lambda a: True
        await await_for(
            lambda: len([a for a in sp.agents.values() if not a.stopping]) == 1, 10, what="one agent to be stopped"
        )
    finally:
        await sp.stop_all(grace=2)
    assert sp.agents == {}
