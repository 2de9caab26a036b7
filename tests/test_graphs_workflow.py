"""The workflow block in a graph (issue 14): a graph whose middle node runs a named sequential
workflow of two ``assistant`` participants against the scripted model. The node is routed to the
``workflow`` agent type, the daemon fills in the workflow's definition (a delegation, not a
client's Submit), its turns are sub-tasks of the workflow's sub-task, and the node's outputs
(result, transcript) feed the next node. An unknown workflow fails its node, naming it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchgpt.models import Action, Command, Task, TaskResult, TaskState, child_task_id
from tests.support.mesh import Daemon
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.workflows import Speakers, assistant, write

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[1]

GRAPH = {
    "name": "plan-and-write",
    "inputs": {"topic": {"to": "ask.values.topic", "default": "ISO dates"}},
    "nodes": [
        {"id": "ask", "block": "text.template", "input": {"template": "a parser of {{topic}}"}},
        {"id": "flow", "block": "workflow", "input": {"workflow": "duo"}},
        {"id": "check", "block": "text.match", "input": {"pattern": "final: (\\w+)", "group": 1}},
    ],
    "links": [
        {"from": "ask.text", "to": "flow.input"},
        {"from": "flow.result", "to": "check.text"},
    ],
    "outputs": {"name": "check.positive", "turns": "flow.transcript"},
}


async def run_graph(d: Daemon, gid: str) -> tuple[TaskResult, list[Task]]:
    async with d.client(timeout=60) as c:
        cmd = Command("graph", Action.RUN, "{}", options={"graph_id": gid})
        events = [e async for e in c.submit(cmd)]
        result = events[-1].result
        assert result is not None, events
        _, _, children = await c.get_task(result.task_id, with_events=False)
        return result, children


def task_view(d: Daemon, task_id: str) -> str:
    """`/task ID` as the user sees it (this checkout's CLI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update(ORCHGPT_ADDRESS=d.address, ORCHGPT_CERTS=str(d.certs), PYTHONPATH=str(ROOT), COLUMNS="250")
    r = subprocess.run(
        [sys.executable, "-m", "cli", "-c", f"/task {task_id}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


async def create(d: Daemon, graph: dict[str, Any], gid: str) -> None:
    async with d.client(timeout=60) as c:
        await c.create_graph(json.dumps(graph), "json", gid)


def test_a_graph_runs_a_sequential_workflow_of_assistants(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "duo",
        f"""
name = "duo"
type = "sequential"
agents = [{assistant("planner", "You are planner.")}, {assistant("writer", "You are writer.")}]
summary_method = "last"
""",
    )
    sp = Speakers({"planner": ["1. split 2. parse"], "writer": ["final: parse_iso"]})
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf"), env=srv.env(api_key="test")).start()
        asyncio.run(create(d, GRAPH, "wf-graph"))
        result, children = asyncio.run(run_graph(d, "wf-graph"))
        reqs = srv.chat_requests
        nope = dict(GRAPH, nodes=[{"id": "flow", "block": "workflow", "input": {"workflow": "nope"}}])
        nope.update(links=[], inputs={}, outputs={"out": "flow.result"})
        asyncio.run(create(d, nope, "wf-nope"))
        failed, _ = asyncio.run(run_graph(d, "wf-nope"))
        shown = task_view(d, result.task_id)
    assert result.state == TaskState.SUCCEEDED, result.error
    assert json.loads(result.output) == {
        "name": "parse_iso",
        "turns": [
            {"speaker": "planner", "content": "1. split 2. parse"},
            {"speaker": "writer", "content": "final: parse_iso"},
        ],
    }
    # the workflow node is a sub-task of the graph's run, on the workflow agent type, by name
    flow_id = child_task_id(result.task_id, "node:flow")
    flow = next(c for c in children if c.task_id == flow_id)
    assert flow.agent_type == "workflow" and flow.input == "a parser of ISO dates"
    assert flow.state == TaskState.SUCCEEDED and flow.submitted_by == "client:cli"
    assert flow.result is not None and flow.result.output == "final: parse_iso"
    # both participants ran as assistant sub-tasks of the workflow's task, on the scripted model
    assert [s for s, _ in sp.calls] == ["planner", "writer"]
    writer_prompt = str(next(r for r in reqs if "You are writer." in str(r["messages"][0])))
    assert "a parser of ISO dates" in writer_prompt and "1. split 2. parse" in writer_prompt
    nodes = {n["node"]: n for n in json.loads(result.data["nodes"])}
    assert [nodes[n]["state"] for n in ("ask", "flow", "check")] == ["completed"] * 3
    run = nodes["flow"]["runs"][0]
    assert run["task_id"] == flow_id and run["inputs"]["workflow"] == "duo"
    assert run["outputs"]["result"] == "final: parse_iso"
    # an unknown workflow: the node fails, naming the node, the block and the workflow
    assert failed.state == TaskState.FAILED
    assert "node 'flow' (workflow)" in failed.error and "no workflow 'nope'" in failed.error
    # /task shows the three node executions, the workflow's among them
    out = shown.splitlines()
    at = out.index("node executions (3)")
    rows = {line.split()[0]: line for line in out[at + 2 : at + 5]}
    assert rows["flow"].split()[1:3] == ["workflow", "completed"], shown
    assert '"workflow": "duo"' in rows["flow"] and '"result": "final: parse_iso"' in rows["flow"]
    assert rows["check"].split()[1:3] == ["text.match", "completed"], shown
