"""Routing: spawned and hand-started agents, unknown types, control actions, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from orchgpt.certs import paths_for
from orchgpt.errors import ClientError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import Action, Command, EventKind, TaskState
from orchgpt.tls import secure_channel
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(90)


async def run_task(client, cmd: Command, timeout: float = 30):  # type: ignore[no-untyped-def]
    events = []

    async def go() -> None:
        async for ev in client.submit(cmd):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


async def test_orchgpt_spawns_an_echo_agent_and_returns_its_reply(daemon: Daemon) -> None:
    async with daemon.client() as c:
        events = await run_task(c, Command("echo", Action.RUN, "hello"))
        assert events[0].kind == EventKind.STATUS and events[0].state == TaskState.QUEUED
        final = events[-1]
        assert final.kind == EventKind.RESULT and final.result is not None
        assert final.result.state == TaskState.SUCCEEDED and final.result.output == "hello"
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        agents = await c.list_agents()
        assert len(agents) == 1 and agents[0].agent_type == "echo" and agents[0].local
        assert final.result.agent_id == agents[0].agent_id
        # the stored task agrees
        task, stored_events, _ = await c.get_task(final.task_id)
        assert task.state == TaskState.SUCCEEDED and task.result and task.result.output == "hello"
        assert len(stored_events) == len(events)


async def test_unknown_agent_type_gets_an_error_reply(daemon: Daemon) -> None:
    async with daemon.client() as c:
        with pytest.raises(ClientError) as ei:
            await run_task(c, Command("wizard", Action.RUN, "x"))
    assert ei.value.code == "NOT_FOUND"
    assert "unknown agent type 'wizard'" in str(ei.value) and "echo" in str(ei.value)


async def test_malformed_commands_get_invalid_argument(daemon: Daemon) -> None:
    async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as ch:
        stub = pb_grpc.MeshStub(ch)
        for cmd, detail in [
            (pb.Command(agent_type="", action=pb.RUN_ACTION), "no agent type"),
            (pb.Command(agent_type="echo", action=pb.ACTION_UNSPECIFIED), "invalid action"),
            (pb.Command(agent_type="echo", action=pb.RUN_ACTION, task_id="../etc"), "invalid task id"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in stub.Submit(pb.SubmitRequest(command=cmd), timeout=5):
                    pass
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, cmd
            assert detail in (ei.value.details() or "")
        # oversize: more than max_message_bytes (4 MiB default)
        big = pb.Command(agent_type="echo", action=pb.RUN_ACTION, input="x" * (5 * 1024 * 1024))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in stub.Submit(pb.SubmitRequest(command=big), timeout=10):
                pass
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the daemon stayed up and still works
    async with daemon.client() as c:
        events = await run_task(c, Command("echo", Action.RUN, "still here"))
        assert events[-1].result and events[-1].result.output == "still here"


async def test_a_hand_started_agent_joins_is_listed_and_receives_work(
    daemon_factory,
    agents: list[AgentProc],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    d = daemon_factory("--no-spawn").start()
    # an agent type no built-in provides is routable only through the remote agent
    remote = start_agent(d, "remote-echo-1", "echo", cwd=tmp_path / "elsewhere")
    agents.append(remote)
    async with d.client() as c:
        await await_for(lambda: c.list_agents(), timeout=20, what="the remote agent to register")
        listed = await c.list_agents()
        assert [(a.agent_id, a.agent_type, a.local) for a in listed] == [("remote-echo-1", "echo", False)]
        events = await run_task(c, Command("echo", Action.RUN, "from afar"))
        assert events[-1].result and events[-1].result.agent_id == "remote-echo-1"
        assert events[-1].result.output == "from afar"


async def test_no_agent_and_spawning_disabled_is_a_clear_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory("--no-spawn").start()
    async with d.client() as c:
        with pytest.raises(ClientError) as ei:
            await run_task(c, Command("echo", Action.RUN, "x"))
    assert ei.value.code == "FAILED_PRECONDITION"
    assert "no echo agent is connected" in str(ei.value)


async def test_status_and_terminate_actions(daemon: Daemon) -> None:
    async with daemon.client() as c:
        await run_task(c, Command("echo", Action.RUN, "warm up"))
        status = await run_task(c, Command("echo", Action.STATUS))
        assert status[-1].result and "1 echo agent(s)" in status[-1].result.output
        term = await run_task(c, Command("echo", Action.TERMINATE))
        assert term[-1].result and "terminated 1 echo agent(s)" in term[-1].result.output
        await await_for(lambda: _no_agents(c), timeout=10, what="the echo agent to stop")


async def _no_agents(c) -> bool:  # type: ignore[no-untyped-def]
    return not await c.list_agents()


async def test_idempotent_task_id_does_not_run_twice(daemon: Daemon) -> None:
    async with daemon.client() as c:
        first = await run_task(c, Command("echo", Action.RUN, "once", task_id="job-42"))
        again = await run_task(c, Command("echo", Action.RUN, "once", task_id="job-42"))
        assert first[-1].result and again[-1].result
        assert [e.seq for e in again] == [e.seq for e in first]  # a replay, not a second run
        tasks = await c.list_tasks()
        assert [t.task_id for t in tasks].count("job-42") == 1
        _, events, _ = await c.get_task("job-42")
        assert sum(1 for e in events if e.kind == EventKind.RESULT) == 1


async def test_cancel_a_running_task(daemon: Daemon) -> None:
    async with daemon.client() as c:
        events: list = []

        async def go() -> None:
            async for ev in c.submit(Command("echo", Action.RUN, "slow", task_id="slow-1", options={"delay": "30"})):
                events.append(ev)

        runner = asyncio.create_task(go())
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), timeout=15, what="running")
        t = await c.cancel("slow-1", "changed my mind")
        assert t.state == TaskState.CANCELLED
        await asyncio.wait_for(runner, 10)
        assert events[-1].kind == EventKind.RESULT and events[-1].state == TaskState.CANCELLED
        assert "changed my mind" in events[-1].text
        with pytest.raises(ClientError) as ei:
            await c.cancel("no-such-task")
        assert ei.value.code == "NOT_FOUND"
        # the agent is free again
        done = await run_task(c, Command("echo", Action.RUN, "next"))
        assert done[-1].result and done[-1].result.ok


async def test_a_local_agent_that_cannot_start_fails_its_task_with_the_agents_reason(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}).start()
    async with d.client() as c:
        events = await run_task(c, Command("architect", Action.CREATE, "fastapi app"), timeout=60)
    final = events[-1]
    assert final.kind == EventKind.RESULT and final.state == TaskState.FAILED
    assert "failed to start 3 times" in final.text and "no model is configured" in final.text


async def test_every_task_message_is_in_the_store(daemon: Daemon) -> None:
    async with daemon.client() as c:
        events = await run_task(c, Command("echo", Action.RUN, "logged", task_id="logged-1"))
        assert events[-1].result and events[-1].result.ok
    assert daemon.stop() == 0
    from tests.support.stores import daemon_store

    store = daemon_store(daemon)
    try:
        kinds = [m["type"] for m in store.messages(task_id="logged-1")]
        task = store.get_task("logged-1")
    finally:
        store.close()
    assert kinds == ["COMMAND", "RUN", "REPLY"]
    assert task is not None and task.state == TaskState.SUCCEEDED
