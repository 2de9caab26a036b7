"""The AMQP bridge's questions (USER_INPUT) end to end: asked and answered over AMQP, matched by
correlation id, ended by no answer, asked again after the bridge is killed."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import paths_for
from tests.support.mesh import Daemon, issue, wait_for
from tests.support.rabbitmq import missing_reason

pytestmark = pytest.mark.timeout(120)

_missing = missing_reason()
if _missing:
    pytest.skip(_missing, allow_module_level=True)

from tests.support import amqp_bridge  # noqa: E402
from tests.support.amqp_bridge import SeedService, roles  # noqa: E402

# The shared fixtures (pytest finds a fixture by its name in the test's module).
broker, queues, mesh = amqp_bridge.broker, amqp_bridge.queues, amqp_bridge.mesh
bridge_factory, service = amqp_bridge.bridge_factory, amqp_bridge.service


class AskingAgent(Agent):
    """Asks for approval of `calls` tool calls and answers with the decisions it got."""

    type = "asker"
    capabilities = ("asker",)

    async def run(self, ctx: TaskContext) -> Outcome:
        answers = []
        for i in range(int(ctx.task.options.get("calls", "1"))):
            r = await ctx.approve("write_file", json.dumps({"path": f"f{i}.txt"}), f"{ctx.task.input}: write f{i}.txt")
            answers.append(f"{r.decision}" + (f":{r.feedback}" if r.feedback else ""))
        return Outcome(output=" ".join(answers))


@pytest.fixture
def asker(mesh: Daemon, tmp_path: Path) -> Iterator[None]:
    """Two real agent links (mutual TLS, gRPC) running the AskingAgent in a thread of this process."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    links = []
    for i in range(2):
        name = f"asker-{i}-{uuid.uuid4().hex[:6]}"
        issue(mesh.certs, name, "agent")
        links.append(Link(AskingAgent(), name, mesh.address, paths_for(mesh.certs, name), tmp_path / f"ws{i}"))

    async def run_all() -> None:
        await asyncio.gather(*(link.run() for link in links))

    runner = loop.create_task(run_all())

    def serve() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(runner)
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wait_for(lambda: all(link.connected.is_set() for link in links), 15, what="the asking agents to connect")
    yield
    for link in links:
        asyncio.run_coroutine_threadsafe(link.stop(grace=1), loop).result(10)
    with contextlib.suppress(RuntimeError):  # the stopped links may have ended the runner and closed the loop
        loop.call_soon_threadsafe(runner.cancel)
    thread.join(10)


def test_user_input_is_asked_and_answered_over_amqp(bridge_factory: Any, service: SeedService, asker: None) -> None:
    bridge_factory().start()
    service.send(json.dumps({"content": "job", "agent": "asker", "approval": True, "options": {"calls": "2"}}))
    [(q1, _)] = service.receive(1)
    assert (q1["role"], q1["content"]) == ("USER_INPUT", "job: write f0.txt")
    service.send("y")  # the seed's way: a plain string answers the conversation's open question
    [(q2, p2)] = service.receive(1)
    assert q2["role"] == "USER_INPUT" and q2["question_id"] != q1["question_id"]
    service.send("only in the workspace", correlation_id=p2.correlation_id)  # or by correlation id
    [(final, _)] = service.receive(1)
    assert (final["role"], final["content"]) == ("ON_RESPONSE", "approve feedback:only in the workspace")


def test_answers_are_matched_by_correlation_id_not_arrival_order(
    bridge_factory: Any, service: SeedService, asker: None
) -> None:
    bridge_factory().start()
    for who in ("alice", "bob"):
        service.send(json.dumps({"content": who, "agent": "asker", "approval": True}), correlation_id=who)
    questions = {m["content"]: p for m, p in service.receive(2)}
    assert set(questions) == {"alice: write f0.txt", "bob: write f0.txt"}
    # answered in the other order, each by its question's correlation id
    service.send("for bob", correlation_id=questions["bob: write f0.txt"].correlation_id)
    service.send("for alice", correlation_id=questions["alice: write f0.txt"].correlation_id)
    finals = {p.correlation_id: m["content"] for m, p in service.receive(2)}
    assert finals == {"alice": "feedback:for alice", "bob": "feedback:for bob"}


def test_a_no_answer_ends_the_conversation(
    bridge_factory: Any, service: SeedService, asker: None, mesh: Daemon
) -> None:
    import asyncio

    bridge_factory().start()
    service.send(json.dumps({"content": "job", "agent": "asker", "approval": True}))
    [(q, _)] = service.receive(1)
    assert q["role"] == "USER_INPUT"
    service.send("no")
    assert roles(service.receive(1)) == [("SYSTEM", "SIGTERM_FROM_AUTOGPT")]

    async def state() -> str:
        async with mesh.client("amqp-bridge") as c:  # the bridge owns the tasks it submits
            task, _, _ = await c.get_task(q["task_id"], with_events=False)
            return str(task.state)

    assert asyncio.run(state()) == "cancelled"
    assert service.receive(1, timeout=2) == []  # one kill code, no other answer


def test_bridge_killed_with_a_question_open_asks_only_that_one_again(
    bridge_factory: Any, service: SeedService, asker: None
) -> None:
    bridge = bridge_factory().start()
    service.send(
        json.dumps({"content": "job", "agent": "asker", "approval": True, "options": {"calls": "2"}}),
        message_id="job-1",
    )
    [(q1, _)] = service.receive(1)
    service.send("y")
    [(q2, _)] = service.receive(1)
    assert q2["role"] == "USER_INPUT" and q2["question_id"] != q1["question_id"]
    bridge.stop(signal.SIGKILL)
    bridge.start()  # the request is redelivered: its task's events are replayed, both questions with them
    again = service.receive(1, timeout=20) + service.receive(1, timeout=2)
    assert [(m["role"], m["question_id"]) for m, _ in again] == [("USER_INPUT", q2["question_id"])]
    service.send("y")  # the one open question, so a plain answer still finds it
    [(final, _)] = service.receive(1)
    assert (final["role"], final["content"]) == ("ON_RESPONSE", "approve approve"), bridge.log()
