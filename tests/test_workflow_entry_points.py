"""A workflow run is resolved to its definition by the mesh (Mesh.submit), whatever way it came
in: over A2A and from a schedule (not only gRPC Submit) the workflow agent gets the definition
and runs; a definition sent by the client is refused on every way in."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import A2AError

from orchgpt.errors import ClientError, RoutingError
from orchgpt.mesh import Mesh
from orchgpt.models import Action, Command, TaskState
from orchgpt.store import MemoryStore
from orchgpt.workflows import DEF_OPTION, Workflow, WorkflowBook
from tests.support.a2a_calls import A2A_ARGS, Caller, a2a_url, final_state, message, stream, tls
from tests.support.fake_ports import FakeSpawner
from tests.support.mesh import Daemon, await_for
from tests.support.workflows import write

pytestmark = pytest.mark.timeout(60)

EVERY_SECOND = "* * * * * *"  # croniter's sixth field: seconds
ECHOES = """
name = "echoes"
type = "sequential"
description = "one echo turn"
agents = ["echo"]
summary_method = "last"
"""


@pytest.fixture
def daemon(daemon_factory, tmp_path: Path) -> Daemon:  # type: ignore[no-untyped-def]
    write(tmp_path / "wf", "echoes", ECHOES)
    d: Daemon = daemon_factory(*A2A_ARGS, "--workflows-dir", str(tmp_path / "wf")).start()
    return d


async def test_a_workflow_sent_over_a2a_runs_and_a_client_definition_is_refused(daemon: Daemon, certs: Path) -> None:
    caller = Caller(a2a_url(daemon), tls(certs, "cli"))
    try:
        client = await caller.client("workflow")
        events = await stream(client, message("say hello", workflow="echoes"))
        assert final_state(events) == a2a.TASK_STATE_COMPLETED, events
        task_id = events[0].task.id
        got = await client.get_task(a2a.GetTaskRequest(id=task_id))
        out = "".join(p.text for a in got.artifacts for p in a.parts)
        assert "Task: say hello" in out and "You are echo" in out, out
        with pytest.raises(A2AError, match="set by the daemon"):
            await stream(client, message("evil", workflow="echoes", **{DEF_OPTION: "{}"}))
    finally:
        await caller.close()


async def test_a_scheduled_workflow_runs(daemon: Daemon) -> None:
    async with daemon.client(timeout=30) as c:
        for options, code, named in (
            ({"workflow": "nope"}, "NOT_FOUND", "no workflow 'nope'"),
            ({"workflow": "echoes", DEF_OPTION: "{}"}, "INVALID_ARGUMENT", "set by the daemon"),
        ):
            with pytest.raises(ClientError) as e:
                await c.add_schedule(EVERY_SECOND, Command("workflow", Action.RUN, "x", options=options))
            assert e.value.code == code and named in str(e.value), str(e.value)
        s = await c.add_schedule(EVERY_SECOND, Command("workflow", Action.RUN, "tick", options={"workflow": "echoes"}))

        fired: list[str] = []

        async def first_run() -> bool:
            _, runs = await c.get_schedule(s.schedule_id, history=10)
            fired.extend(r.task_id for r in runs if r.task_id)
            return bool(fired)

        await await_for(first_run, 20, interval=0.2, what="the schedule's first run")
        await c.delete_schedule(s.schedule_id)
        task_id = fired[0]

        async def finished() -> bool:
            t, _, _ = await c.get_task(task_id, with_events=False)
            return t.state.terminal

        await await_for(finished, 20, interval=0.2, what=f"workflow task {task_id}")
        t, _, _ = await c.get_task(task_id, with_events=False)
        assert t.state == TaskState.SUCCEEDED and t.result is not None, t.result
        assert "Task: tick" in t.result.output


def test_mesh_submit_resolves_the_definition_for_every_caller(tmp_path: Path) -> None:
    write(tmp_path, "echoes", ECHOES)
    m = Mesh(MemoryStore(), builtin_types=("echo", "workflow"), spawner=FakeSpawner())
    m.workflows = WorkflowBook(tmp_path)
    task, _ = m.submit(Command("workflow", input="x", options={"workflow": "echoes"}), "client:a")
    assert Workflow.from_json(task.options[DEF_OPTION]).agent_types() == ["echo"]
    with pytest.raises(RoutingError, match="set by the daemon"):
        m.submit(Command("workflow", input="x", options={DEF_OPTION: "{}"}), "client:a")
    with pytest.raises(RoutingError, match="no workflow 'nope'"):
        m.submit(Command("workflow", input="x", options={"workflow": "nope"}), "client:a")
