"""The manager delegates to an A2A-fronted agent type (issue 20): a real external A2A agent
(tests/support/a2a_upper.py, a2a-sdk only) behind the proxy the daemon runs (--a2a-agents),
a real daemon, real agentd processes, and the scripted model server planning one sub-task for
the `upper` type. The sub-task is routed to the external agent, and its output comes back into
the manager's report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("a2a.client")

from orchgpt.models import Action, Command, EventKind
from tests.support.a2a_calls import start_upper
from tests.support.mesh import Daemon, await_for
from tests.support.scripted_openai import ScriptedOpenAI, text

pytestmark = pytest.mark.timeout(90)

IDEA = "a greeting"
PLAN = {"tasks": [{"id": "shout", "agent": "upper", "task": "say hello", "depends_on": []}]}


def planner(req: dict[str, Any]) -> Any:
    return text(json.dumps(PLAN))  # only the manager asks the model


async def test_the_manager_delegates_to_an_a2a_agent_type(daemon_factory, tmp_path: Path) -> None:
    upper, url = start_upper(tmp_path)
    try:
        with ScriptedOpenAI(responder=planner, models=("gpt-4o-mini",)) as model:
            d: Daemon = daemon_factory(
                "--a2a-agents",
                f"upper={url}",
                "--heartbeat-interval",
                "2",
                env=model.env(api_key="test"),
            ).start()
            async with d.client() as mesh:

                async def registered() -> bool:
                    return bool(await mesh.list_agents("upper"))

                await await_for(registered, 30, what="the daemon's proxy agent for upper")
                events = [
                    ev async for ev in mesh.submit(Command("manager", Action.CREATE, IDEA, options={"types": "upper"}))
                ]
                final = events[-1]
                assert final.kind == EventKind.RESULT and final.result is not None
                assert final.result.ok, final.result.error + d.log()[-3000:]
                subs = {s["agent_type"]: s for s in json.loads(final.result.data["subtasks"])}
                assert set(subs) == {"upper"} and subs["upper"]["state"] == "succeeded", subs
                task, _, children = await mesh.get_task(final.task_id, with_events=False)
                (child,) = [c for c in children if c.agent_type == "upper"]
                assert child.result is not None and child.result.output.startswith("SAY HELLO")
                assert "THE PROJECT: A GREETING" in child.result.output  # the manager's framing
                assert child.agent_id == "upper" and task.state == "succeeded"
                # the proxy's streamed chunks reached the manager's task stream as a sub-task's
                assert any(e.task_id == child.task_id and e.kind == EventKind.TOKEN for e in events)
    finally:
        upper.terminate()
        try:
            upper.wait(10)
        except subprocess.TimeoutExpired:
            upper.kill()
            upper.wait(5)
