"""What a schedule names must exist when it is added, as at each run: a graph of the caller's, a
workflow of the daemon's workflows directory. A scheduled workflow run gets its definition from
the daemon (like /workflow run), so it runs; a definition given by the client is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, TaskState
from tests.support.mesh import Daemon, await_for, issue
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.workflows import Speakers, assistant, write

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "echo-pipeline.json"


def graph(graph_id: str) -> Command:
    return Command("graph", Action.RUN, "{}", options={"graph_id": graph_id})


def workflow(name: str, **options: str) -> Command:
    return Command("workflow", Action.RUN, "say hi", options={"workflow": name, **options})


async def test_add_refuses_a_target_that_does_not_exist(daemon_factory, certs: Path) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory().start()
    issue(certs, "bob", "client")
    async with d.client() as alice, d.client("bob") as bob:
        await bob.create_graph(EXAMPLE.read_text(), "json", "bobs-graph")
        mine, _ = await alice.create_graph(EXAMPLE.read_text(), "json", "alices-graph")
        cases = [
            (graph("no-such-graph"), "NOT_FOUND", "command: graph 'no-such-graph' not found"),
            (graph("bobs-graph"), "NOT_FOUND", "command: graph 'bobs-graph' not found"),
            (graph(""), "INVALID_ARGUMENT", "command: a graph run needs option graph_id"),
            (workflow("nope"), "NOT_FOUND", "command: no workflow 'nope'"),
            (
                workflow("nope", workflow_def="{}"),
                "INVALID_ARGUMENT",
                "command: option workflow_def is set by the daemon",
            ),
        ]
        for cmd, code, words in cases:
            with pytest.raises(ClientError) as e:
                await alice.add_schedule("* * * * *", cmd)
            assert e.value.code == code and words in str(e.value), str(e.value)
        assert await alice.list_schedules() == []
        s = await alice.add_schedule("* * * * *", graph(mine.graph_id))  # her own: accepted
        assert s.command.options == {"graph_id": "alices-graph"}


async def test_a_scheduled_workflow_runs_with_the_daemon_s_definition(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "hello",
        f"""
name = "hello"
type = "sequential"
agents = [{assistant("greeter", "You are greeter.")}]
summary_method = "last"
""",
    )
    with ScriptedOpenAI(responder=Speakers({"greeter": ["hi there"]})) as srv:
        d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf"), env=srv.env(api_key="test")).start()
        async with d.client() as c:
            s = await c.add_schedule("* * * * * *", workflow("hello"))

            async def ran() -> bool:
                _, runs = await c.get_schedule(s.schedule_id)
                return any(r.task_state == "succeeded" for r in runs)

            await await_for(ran, 30, 0.2, what="a scheduled workflow run that succeeds")
            await c.pause_schedule(s.schedule_id)
            _, runs = await c.get_schedule(s.schedule_id)
            done = next(r for r in runs if r.task_state == "succeeded")
            task, _, children = await c.get_task(done.task_id, with_events=False)
    assert task.state == TaskState.SUCCEEDED and task.result is not None
    assert task.result.output == "hi there" and task.submitted_by == "client:cli"
    assert [t["speaker"] for t in json.loads(task.result.data["transcript"])] == ["greeter"]
    assert [t.agent_type for t in children] == ["assistant"]
