"""Declared agent types through a real daemon (issue 13): spawned locally on demand, run by a
remote `agentd --type NAME` that has no file (the definition comes over the mesh), listed for
the CLI, and picked up by `orchgpt agents reload` (SIGHUP)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, EventKind, TaskEvent, TaskState
from tests.support.mesh import Daemon, await_for, start_agent, wait_for
from tests.support.scripted_openai import ScriptedOpenAI, text, tool_call

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
REVIEWER = """name = "reviewer"
description = "Reviews code for bugs and clarity"
system_prompt = "You are a meticulous code reviewer."
model = "smart"
tools = ["read_file", "write_file"]
capabilities = ["review"]
max_steps = 4
"""


@pytest.fixture
def model() -> Any:
    with ScriptedOpenAI(models=("scripted-model",)) as srv:
        yield srv


def agents_dir(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "agents.d"
    d.mkdir(exist_ok=True)
    for name, body in files.items():
        (d / f"{name}.toml").write_text(body)
    return d


async def run(c: MeshClient, cmd: Command, timeout: float = 60) -> list[TaskEvent]:
    events: list[TaskEvent] = []

    async def go() -> None:
        async for ev in c.submit(cmd):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


def script_review(model: ScriptedOpenAI) -> None:
    model.push(
        tool_call("write_file", {"path": "REVIEW.md", "content": "1. no tests\n"}),
        text("Review written to REVIEW.md: one finding."),
    )


async def test_a_declared_agent_is_spawned_on_demand_and_runs_end_to_end(daemon_factory, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--agents-dir", str(agents_dir(tmp_path, reviewer=REVIEWER)), env=model.env()).start()
    script_review(model)
    async with d.client() as c:
        assert (await c.declared_types())["reviewer"] == "Reviews code for bugs and clarity"
        events = await run(c, Command("reviewer", Action.RUN, "review app.py"))
        result = events[-1].result
        assert result is not None and result.state == TaskState.SUCCEEDED, result
        assert result.output == "Review written to REVIEW.md: one finding."
        assert result.agent_id.startswith("local-reviewer-")
        assert [a.path for a in result.artifacts] == ["REVIEW.md"]
        steps = [e for e in events if e.kind == EventKind.STEP and e.data.get("tool")]
        assert steps[0].data["tool"] == "write_file" and steps[0].data["ok"] == "true"
        assert '"path": "REVIEW.md"' in steps[0].data["arguments"]
        assert steps[0].data["result"].startswith("wrote REVIEW.md")
        [agent] = await c.list_agents("reviewer")
        assert agent.capabilities == ["review"]  # from the definition
    first = model.chat_requests[0]
    assert first["messages"][0]["content"].startswith("You are a meticulous code reviewer.")
    assert {t["function"]["name"] for t in first["tools"]} == {"read_file", "write_file"}


async def test_a_remote_agentd_runs_a_declared_type_it_has_no_file_for(
    daemon_factory,
    agents,
    model,  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    d: Daemon = daemon_factory("--no-spawn", "--agents-dir", str(agents_dir(tmp_path, reviewer=REVIEWER))).start()
    home = tmp_path / "elsewhere"  # no agents.d there, nor any definition
    a = start_agent(d, "host2-reviewer", "reviewer", cwd=home, extra_env=model.env())
    agents.append(a)
    script_review(model)
    async with d.client() as c:
        await await_for(lambda: c.list_agents("reviewer"), 20, what="the remote reviewer to register")
        events = await run(c, Command("reviewer", Action.RUN, "review app.py"))
        result = events[-1].result
        assert result is not None and result.state == TaskState.SUCCEEDED, (result, a.log())
        assert result.agent_id == "host2-reviewer" and result.output.startswith("Review written")
    assert not list(home.rglob("*.toml"))
    assert "definition_received" in a.log()


def test_agentd_for_a_type_nobody_declared_exits_naming_it(daemon_factory, agents, model) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn").start()
    a = start_agent(d, "host2-ghost", "ghost", extra_env=model.env())
    agents.append(a)
    assert a.proc.wait(30) == 1
    assert "'ghost' is not a built-in agent type" in a.log() and "no definition" in a.log()


def reload(d: Daemon, adir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "orchgpt",
            "agents",
            "reload",
            "--data-dir",
            str(d.data_dir),
            "--agents-dir",
            str(adir),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


async def test_reload_picks_up_a_new_file_and_keeps_the_old_set_when_invalid(daemon_factory, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    adir = agents_dir(tmp_path)
    d: Daemon = daemon_factory("--agents-dir", str(adir), env=model.env()).start()
    async with d.client() as c:
        with pytest.raises(ClientError, match="unknown agent type 'reviewer'"):
            await run(c, Command("reviewer", Action.RUN, "review"))
        (adir / "reviewer.toml").write_text(REVIEWER)
        r = reload(d, adir)
        assert r.returncode == 0, r.stderr
        assert "sent SIGHUP" in r.stdout
        wait_for(lambda: "agents_reloaded" in d.log(), 10, what="the daemon to reload")
        assert "reviewer" in await c.declared_types()
        script_review(model)
        events = await run(c, Command("reviewer", Action.RUN, "review app.py"))
        assert events[-1].result is not None and events[-1].result.state == TaskState.SUCCEEDED
        # a broken file: `agents reload` refuses naming it; a SIGHUP anyway keeps the old set
        bad = adir / "writer.toml"
        bad.write_text('name = "writer"\nsystem_prompt = "x"\ntools = ["shell"]\n')
        r = reload(d, adir)
        assert r.returncode == 1 and f"{bad}: tools: unknown tool 'shell'" in r.stderr
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "agents_reload_failed" in d.log(), 10, what="the failed reload to be logged")
        assert set(await c.declared_types()) == {"reviewer"}


def test_the_daemon_refuses_to_start_with_a_bad_definition(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    adir = tmp_path / "data" / "agents.d"  # the default place: DATA_DIR/agents.d
    adir.mkdir(parents=True)
    (adir / "reviewer.toml").write_text(REVIEWER + "colour = 'red'\n")
    d: Daemon = daemon_factory()
    with pytest.raises(RuntimeError) as info:
        d.start()
    assert f"{adir / 'reviewer.toml'}: colour: unknown key" in str(info.value)


async def test_a_changed_definition_reaches_the_next_task(daemon_factory, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    adir = agents_dir(tmp_path, reviewer=REVIEWER)
    d: Daemon = daemon_factory("--agents-dir", str(adir), env=model.env()).start()
    async with d.client() as c:
        model.push(text("first"))
        events = await run(c, Command("reviewer", Action.RUN, "one"))
        assert events[-1].result is not None and events[-1].result.output == "first"
        [old] = await c.list_agents("reviewer")
        (adir / "reviewer.toml").write_text(REVIEWER.replace("meticulous", "terse"))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)  # what `orchgpt agents reload` sends
        wait_for(lambda: "agents_reloaded" in d.log(), 10, what="the daemon to reload")
        # the idle local agent of the changed type is stopped; the next task starts a new one
        model.push(text("second"))
        events = await run(c, Command("reviewer", Action.RUN, "two"))
        assert events[-1].result is not None and events[-1].result.output == "second"
        assert events[-1].result.agent_id != old.agent_id
    assert model.chat_requests[-1]["messages"][0]["content"].startswith("You are a terse code reviewer.")
