"""Graph runs on a real daemon: each node execution a routed sub-task (blocks on the `blocks`
agent type, agent blocks on their own type), in dependency order, recorded with its inputs and
outputs; resumed runs reuse completed nodes; bad runs refused with the right code."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orchgpt.errors import ClientError
from orchgpt.graphs.model import parse_graph
from orchgpt.models import Action, Command, Task, TaskResult, TaskState, child_task_id
from tests.support.mesh import Daemon, await_for
from tests.support.stores import daemon_store

pytestmark = pytest.mark.timeout(90)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "echo-pipeline.json"
OWNER = "client:cli"

FANOUT = {
    "name": "fanout",
    "nodes": [
        {"id": "items", "block": "loop.items", "input": {"items": [1, 2, 3]}},
        {"id": "square", "block": "calculator", "input": {"expression": "x * x"}},
        {"id": "check", "block": "condition", "input": {"operator": ">", "value2": 100}},
        {"id": "never", "block": "value"},
    ],
    "links": [
        {"from": "items.item", "to": "square.variables.x"},
        {"from": "square.result", "to": "check.value1"},
        {"from": "check.yes_output", "to": "never.value"},
    ],
    "outputs": {"squares": "square.result", "never": "never.value"},
}


def seed(daemon: Daemon, graph_id: str, definition: str, owner: str = OWNER) -> None:
    """Store a graph as CreateGraph would, before the daemon starts."""
    store = daemon_store(daemon)
    try:
        store.save_graph(graph_id, owner, parse_graph(definition).name, parse_graph(definition).canonical())
    finally:
        store.close()


async def run_graph(d: Daemon, graph_id: str, given: str = "{}", **opts: str) -> tuple[TaskResult, list[Task]]:
    async with d.client(timeout=60) as c:
        events = [
            e async for e in c.submit(Command("graph", Action.RUN, given, options={"graph_id": graph_id, **opts}))
        ]
        result = events[-1].result
        assert result is not None, events
        _, _, children = await c.get_task(result.task_id, with_events=False)
        return result, children


def test_echo_pipeline_runs_each_node_as_a_sub_task(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    seed(d, "echo-pipe", EXAMPLE.read_text())
    d.start()
    result, children = asyncio.run(run_graph(d, "echo-pipe"))
    assert result.state == TaskState.SUCCEEDED, result.error
    assert json.loads(result.output) == {"order": "42", "said": "hello mesh, order 42 is ready"}
    assert result.data["graph_version"] == "1" and result.data["graph_id"] == "echo-pipe"
    ids = {child_task_id(result.task_id, f"node:{n}"): n for n in ("greet", "say", "find")}
    by_node = {ids[c.task_id]: c for c in children}  # ids derived from the run and the node
    assert len(children) == 3
    assert [by_node[n].agent_type for n in ("greet", "say", "find")] == ["blocks", "echo", "blocks"]
    assert all(c.state == TaskState.SUCCEEDED for c in children)
    assert json.loads(by_node["greet"].input) == {
        "template": "hello {{who}}, order 42 is ready",
        "values": {"who": "mesh"},
    }
    assert by_node["say"].input == "hello mesh, order 42 is ready"
    find = by_node["find"]
    assert json.loads(find.input)["text"] == "hello mesh, order 42 is ready"
    assert find.result is not None and json.loads(find.result.output) == {
        "positive": "42",
        "groups": ["42"],
    }
    nodes = json.loads(result.data["nodes"])
    assert [n["state"] for n in nodes] == ["completed"] * 3
    # the node ran in dependency order
    assert by_node["greet"].updated_ms <= by_node["say"].created_ms <= by_node["find"].created_ms


def test_fan_out_loop_branch_and_a_failing_node(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    seed(d, "fan", json.dumps(FANOUT))
    bad = dict(
        FANOUT,
        nodes=[{"id": "c", "block": "calculator", "input": {"expression": "1 / 0"}}],
        links=[],
        outputs={},
    )
    seed(d, "bad", json.dumps(bad))
    d.start()
    result, children = asyncio.run(run_graph(d, "fan"))
    assert result.state == TaskState.SUCCEEDED, result.error
    assert json.loads(result.output) == {"squares": [1.0, 4.0, 9.0], "never": None}
    keys = ["node:items"] + [f"node:{n}#{i}" for n in ("square", "check") for i in range(3)]
    assert sorted(c.task_id for c in children) == sorted(child_task_id(result.task_id, k) for k in keys)
    states = {n["node"]: n["state"] for n in json.loads(result.data["nodes"])}
    assert states == {
        "items": "completed",
        "square": "completed",
        "check": "completed",
        "never": "skipped",
    }
    failed, _ = asyncio.run(run_graph(d, "bad"))
    assert failed.state == TaskState.FAILED
    assert "node 'c' (calculator)" in failed.error and "ZeroDivisionError" in failed.error


def test_runs_are_refused_with_the_right_code(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    seed(d, "mine", EXAMPLE.read_text())
    seed(d, "theirs", EXAMPLE.read_text(), owner="client:someone-else")
    d.start()
    for gid, given, code in (
        ("nope", "{}", "NOT_FOUND"),
        ("theirs", "{}", "NOT_FOUND"),
        ("mine", "[1]", "INVALID_ARGUMENT"),
        ("mine", "{bad", "INVALID_ARGUMENT"),
    ):
        with pytest.raises(ClientError) as e:
            asyncio.run(run_graph(d, gid, given))
        assert e.value.code == code, (gid, given, e.value)
    result, _ = asyncio.run(run_graph(d, "mine", '{"nobody": 1}'))
    assert result.state == TaskState.FAILED and "graph input 'nobody'" in result.error


def test_a_resumed_run_does_not_rerun_completed_nodes(daemon_factory: Any, tmp_path: Path) -> None:
    """A graph task re-run (as after a crash) finds its nodes' sub-tasks by their derived ids."""
    d: Daemon = daemon_factory()
    seed(d, "echo-pipe", EXAMPLE.read_text())
    d.start()
    first, children = asyncio.run(run_graph(d, "echo-pipe"))
    assert first.state == TaskState.SUCCEEDED
    d.stop()
    store = daemon_store(d)
    try:  # the daemon died while the graph task ran: it is unfinished again
        t = store.get_task(first.task_id)
        assert t is not None
        t.state, t.result, t.agent_id = TaskState.QUEUED, None, ""
        store.save_task(t)
    finally:
        store.close()
    d.start()

    async def again() -> tuple[Task, list[Task]]:
        async with d.client(timeout=60) as c:

            async def finished() -> bool:
                t, _, _ = await c.get_task(first.task_id, with_events=False)
                return t.state.terminal

            await await_for(finished, timeout=60, what="the resumed graph run to finish")
            task, _, kids = await c.get_task(first.task_id, with_events=False)
            return task, kids

    task, kids = asyncio.run(again())
    assert task.state == TaskState.SUCCEEDED and task.result is not None
    assert json.loads(task.result.output)["order"] == "42"
    assert sorted((k.task_id, k.updated_ms) for k in kids) == sorted((k.task_id, k.updated_ms) for k in children)


def test_runs_record_the_version_they_ran(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    seed(d, "pipe", EXAMPLE.read_text())
    v2 = json.loads(EXAMPLE.read_text())
    v2["nodes"][0]["input"]["template"] = "bye {{who}}, order 7 is ready"
    seed(d, "pipe", json.dumps(v2))
    d.start()
    latest, _ = asyncio.run(run_graph(d, "pipe"))
    old, _ = asyncio.run(run_graph(d, "pipe", graph_version="1"))
    assert (latest.data["graph_version"], json.loads(latest.output)["order"]) == ("2", "7")
    assert (old.data["graph_version"], json.loads(old.output)["order"]) == ("1", "42")
    with pytest.raises(ClientError) as e:
        asyncio.run(run_graph(d, "pipe", graph_version="3"))
    assert e.value.code == "NOT_FOUND" and "version 3" in str(e.value)


COUNTER: dict[str, Any] = {
    "name": "count-to-3",
    "nodes": [
        {
            "id": "add",
            "block": "calculator",
            "input": {"expression": "n + 1", "variables": {"n": 0}},
        },
        {"id": "check", "block": "condition", "input": {"operator": "<", "value2": 3}},
        {"id": "done", "block": "value"},
    ],
    "links": [
        {"from": "add.result", "to": "check.value1"},
        {"from": "check.yes_output", "to": "add.variables.n", "loop": True},
        {"from": "check.no_output", "to": "done.value"},
    ],
    "outputs": {"count": "done.value"},
}


def test_a_declared_loop_runs_until_it_stops_or_hits_max_iterations(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    seed(d, "count", json.dumps(COUNTER))
    seed(
        d,
        "forever",
        json.dumps(
            {
                **COUNTER,
                "max_iterations": 2,
                "nodes": [
                    {**COUNTER["nodes"][0]},
                    {**COUNTER["nodes"][1], "input": {"operator": "<", "value2": 1000}},
                    COUNTER["nodes"][2],
                ],
            }
        ),
    )
    d.start()
    result, children = asyncio.run(run_graph(d, "count"))
    assert result.state == TaskState.SUCCEEDED, result.error
    assert json.loads(result.output) == {"count": 3.0}
    keys = [
        "node:add",
        "node:check",
        "node:add@1",
        "node:check@1",
        "node:add@2",
        "node:check@2",
        "node:done@2",
    ]
    assert sorted(c.task_id for c in children) == sorted(child_task_id(result.task_id, k) for k in keys)
    nodes = {n["node"]: n for n in json.loads(result.data["nodes"])}
    assert [r["inputs"]["variables"]["n"] for r in nodes["add"]["runs"]] == [0, 1.0, 2.0]
    assert nodes["done"]["state"] == "completed"
    stuck, _ = asyncio.run(run_graph(d, "forever"))
    assert stuck.state == TaskState.FAILED
    assert "still goes on after 2 iterations" in stuck.error


def test_the_agent_block_returns_the_agents_artifacts(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    graph = {
        "name": "files",
        "outputs": {"files": "write.artifacts", "text": "write.result"},
        "nodes": [
            {
                "id": "write",
                "block": "agent",
                "input": {"agent_type": "echo", "input": "saved", "options": {"file": "out.txt"}},
            }
        ],
    }
    seed(d, "files", json.dumps(graph))
    d.start()
    result, children = asyncio.run(run_graph(d, "files"))
    assert result.state == TaskState.SUCCEEDED, result.error
    out = json.loads(result.output)
    assert out["text"] == "saved"
    [art] = out["files"]
    assert art["path"] == "out.txt" and art["size"] == 5 and len(art["sha256"]) == 64
    [child] = children
    assert child.agent_type == "echo" and child.result is not None
    assert [a.path for a in child.result.artifacts] == ["out.txt"]
