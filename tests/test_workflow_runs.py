"""Workflows run on the mesh against the scripted model: every turn a sub-task of the workflow's
task, routed to spawned agents; the result carries the summary, the transcript (stored as the
session's messages) and a usage summary per agent and model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orchgpt.models import Command
from tests.support.mesh import Daemon, await_for
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.workflows import Speakers, assistant, run, write

pytestmark = pytest.mark.timeout(90)


def start(daemon_factory: Any, tmp_path: Path, srv: ScriptedOpenAI) -> Daemon:
    d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf"), env=srv.env(api_key="test"))
    return d.start()


def turns(result: Any) -> list[tuple[str, str]]:
    return [(e["speaker"], e["content"]) for e in json.loads(result.data["transcript"])]


def test_sequential_three_agent_pipeline(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "pipeline",
        f"""
name = "pipeline"
type = "sequential"
agents = [{assistant("planner", "You are planner.")}, {assistant("writer", "You are writer.")},
          {assistant("editor", "You are editor.")}]
summary_method = "last"
""",
    )
    sp = Speakers(
        {
            "planner": ["1. parse 2. test"],
            "writer": ["def parse(): ..."],
            "editor": ["final: def parse()"],
        }
    )
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d = start(daemon_factory, tmp_path, srv)
        events, result = asyncio.run(run(d, "pipeline", "parse ISO dates"))
        reqs = srv.chat_requests
    assert result.state == "succeeded", result.error
    assert turns(result) == [
        ("planner", "1. parse 2. test"),
        ("writer", "def parse(): ..."),
        ("editor", "final: def parse()"),
    ]
    assert result.output == "final: def parse()"
    # each agent saw the task and the previous outputs
    writer_prompt = next(r for r in reqs if "You are writer." in str(r["messages"][0]))["messages"][-1]["content"]
    assert "parse ISO dates" in writer_prompt and "[planner]: 1. parse 2. test" in writer_prompt
    # every turn a sub-task of the workflow's task; its events arrive on the workflow's stream
    root = events[0].task_id
    subs = {e.task_id for e in events if e.task_id != root}
    assert len(subs) == 3 and all(e.parent_task_id == root for e in events if e.task_id in subs)
    speakers = [
        e.data["speaker"]
        for e in events
        if e.task_id == root and e.kind == "step" and "speaker" in e.data and e.data.get("state") == "done"
    ]
    assert speakers == ["planner", "writer", "editor"]
    usage = json.loads(result.data["usage_summary"])
    assert set(usage["agents"]) == {"planner", "writer", "editor"}
    model = usage["total"]["gpt-4o-mini"]
    assert model["total_tokens"] == model["prompt_tokens"] + model["completion_tokens"] > 0
    assert "total_cost" in usage["total"] and usage["start_time"] <= usage["end_time"]


def test_autonomous_run_gathers_every_result(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "solo",
        f"""
name = "solo"
type = "autonomous"
agents = [{assistant("alpha", "You are alpha.")}, {assistant("beta", "You are beta.")}, "echo"]
summary_method = "llm"
""",
    )
    sp = Speakers({"alpha": ["alpha's answer"], "beta": ["beta's answer"]}, summary="both agree")
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d = start(daemon_factory, tmp_path, srv)
        _events, result = asyncio.run(run(d, "solo", "the task"))
    assert result.state == "succeeded", result.error
    got = turns(result)
    assert [s for s, _ in got] == ["alpha", "beta", "echo"]
    assert got[0][1] == "alpha's answer" and got[1][1] == "beta's answer" and "the task" in got[2][1]
    assert result.output == "both agree" and result.data["summary_method"] == "llm"
    assert sorted(c[0] for c in sp.calls) == ["alpha", "beta", "summary"]


def test_cancel_stops_the_whole_workflow(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "slow",
        """
name = "slow"
type = "sequential"
agents = [{name = "waiter", type = "echo", options = {delay = "30"}}, "echo"]
""",
    )
    d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf")).start()

    async def go() -> tuple[Any, list[Any]]:
        async with d.client(timeout=30) as c:
            events: list[Any] = []

            async def follow() -> None:
                async for ev in c.submit(Command("workflow", input="wait", options={"workflow": "slow"})):
                    events.append(ev)

            reader = asyncio.create_task(follow())
            await await_for(
                lambda: any(e.task_id != events[0].task_id and e.kind == "log" for e in events),
                30,
                what="the first turn to run",
            )
            root = events[0].task_id
            await c.cancel(root, "enough")
            await asyncio.wait_for(reader, 15)
            task, _evs, children = await c.get_task(root, with_events=False)
            return task, children

    task, children = asyncio.run(go())
    assert task.state == "cancelled"
    assert [(c.agent_type, c.state) for c in children] == [("echo", "cancelled")]  # the second never started


def test_a_failed_turn_fails_the_workflow_and_keeps_the_turns_before_it(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "fragile",
        """
name = "fragile"
type = "sequential"
agents = ["echo", {name = "broken", type = "echo", options = {fail = "boom"}}, {name = "never", type = "echo"}]
""",
    )
    d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf")).start()
    events, result = asyncio.run(run(d, "fragile", "go"))
    assert result.state == "failed" and "turn 2 (broken) (echo) failed: boom" in result.error
    assert [s for s, _ in turns(result)] == ["echo"]
    assert not any(e.data.get("speaker") == "never" for e in events)

    async def session_messages() -> list[Any]:
        async with d.client() as c:
            task, _e, _c = await c.get_task(events[0].task_id, with_events=False)
            return await c.list_messages(task.session_id)

    assert [m.speaker for m in asyncio.run(session_messages())] == ["client:cli", "echo"]


def test_turns_share_the_workflow_s_workspace_and_its_files(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "notes",
        """
name = "notes"
type = "sequential"
agents = [{name = "scribe", type = "echo", options = {file = "notes.txt"}}, "echo"]
""",
    )
    d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf")).start()
    events, result = asyncio.run(run(d, "notes", "remember this"))
    assert result.state == "succeeded", result.error
    root = events[0].task_id
    assert [a.path for a in result.artifacts] == ["notes.txt"]
    assert (d.data_dir / "workspaces" / root / "notes.txt").read_text().startswith("Task: remember this")

    async def fetch() -> str:
        async with d.client() as c:
            got = await c.fetch_artifact(root, "notes.txt", tmp_path / "got.txt")
            return got.read_text()

    assert asyncio.run(fetch()).startswith("Task: remember this")
