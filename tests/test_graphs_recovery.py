"""A daemon SIGKILLed in the middle of a graph run resumes it from its completed nodes: the
node that finished before the kill does not run again (node execution ids derive from the run
and the node), the run finishes with every node's output."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from orchgpt.models import Action, Command, TaskState
from tests.support.mesh import Daemon, await_for, wait_for

pytestmark = pytest.mark.timeout(120)


def _graph(record: Path) -> str:
    return json.dumps(
        {
            "name": "two-steps",
            "nodes": [
                {
                    "id": "first",
                    "block": "agent",
                    "input": {
                        "agent_type": "echo",
                        "input": "one",
                        "options": {"record": str(record)},
                    },
                },
                {
                    "id": "second",
                    "block": "agent",
                    "input": {
                        "agent_type": "echo",
                        "options": {"record": str(record), "delay": "1"},
                    },
                },
            ],
            "links": [{"from": "first.result", "to": "second.input"}],
            "outputs": {"out": "second.result"},
        }
    )


def test_a_killed_daemon_resumes_the_run_without_rerunning_completed_nodes(daemon_factory: Any, tmp_path: Path) -> None:
    record = tmp_path / "runs.txt"
    d: Daemon = daemon_factory().start()

    async def start_run() -> str:
        async with d.client(timeout=60) as c:
            rec, _ = await c.create_graph(_graph(record))
            stream = c.submit(Command("graph", Action.RUN, "{}", options={"graph_id": rec.graph_id}))
            async for first in stream:  # the first event names the task; leave it running
                return first.task_id
            raise AssertionError("no event")

    task_id = asyncio.run(start_run())
    # the first node finished, the second has not: kill everything
    wait_for(
        lambda: record.exists() and len(record.read_text().splitlines()) == 1,
        60,
        what="the first node to finish",
    )
    d.stop(signal.SIGKILL)
    d.start()

    async def finished() -> Any:
        async with d.client(timeout=60) as c:

            async def done() -> bool:
                t, _, _ = await c.get_task(task_id, with_events=False)
                return t.state.terminal

            await await_for(done, timeout=90, what="the resumed graph run")
            t, _, kids = await c.get_task(task_id, with_events=False)
            return t, kids

    task, kids = asyncio.run(finished())
    assert task.state == TaskState.SUCCEEDED, task.error
    assert json.loads(task.result.output) == {"out": "one"}
    lines = record.read_text().splitlines()
    # "first" ran once, before the kill; "second" recorded once, when it finished after it
    assert len(lines) == 2, lines
    assert {line.split()[0] for line in lines} == {k.task_id for k in kids} and len(kids) == 2
