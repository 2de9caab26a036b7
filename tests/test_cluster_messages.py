"""Agents of different daemons of a cluster talk to each other (issue 19, docs/scaling.md):
a sub-task delegated by an agent on daemon A and run by an agent on daemon B answers the
delegation; a COMMAND (by agent id and by type) to an agent on the other daemon gets its
REPLY; a BROADCAST reaches the agents of every daemon. Real daemons on a real PostgreSQL,
a real agentd subprocess (echo), and in-process agentd Links with their own certificates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Command, Delegation, EventKind, TaskEvent
from tests.support.mesh import AgentProc, Daemon, await_for, issue, start_agent

pytestmark = pytest.mark.timeout(120)


class Boss(Agent):
    type = "boss"
    capabilities = ("boss",)
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        r = await ctx.delegate(Delegation("echo", input=f"sub of {ctx.task.input}"))
        return Outcome(output=f"{r.state}:{r.output}")


class Listener(Agent):
    type = "listener"
    capabilities = ("listener",)
    needs_model = False


class RecordingLink(Link):
    """A Link that keeps the agent-to-agent envelopes it gets."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.got: list[pb.Envelope] = []

    def on_message(self, env: pb.Envelope) -> None:
        self.got.append(env)
        super().on_message(env)


@asynccontextmanager
async def linked(d: Daemon, agent: Agent, name: str, tmp_path: Path) -> AsyncIterator[RecordingLink]:
    issue(d.certs, name, "agent")
    link = RecordingLink(agent, name, d.address, paths_for(d.certs, name), tmp_path / f"ws-{name}")
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 15)
        yield link
    finally:
        await link.stop(grace=1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def two(daemon_factory, postgres_url: str, tmp_path: Path) -> tuple[Daemon, Daemon]:  # type: ignore[no-untyped-def]
    a, b = (
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(2)
    )
    return a, b


async def listed_on(d: Daemon, *agent_ids: str) -> None:
    async def all_there() -> bool:
        async with d.client() as c:
            return set(agent_ids) <= {x.agent_id for x in await c.list_agents()}

    await await_for(all_there, timeout=20, what=f"{agent_ids} listed on {d.address}")


async def test_a_delegation_to_an_agent_of_the_other_daemon_gets_its_result(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    echo = start_agent(b, "echo-b")  # the echo agent only on B
    agents.append(echo)
    async with linked(a, Boss(), "boss-1", tmp_path):  # the delegating agent only on A
        await listed_on(a, "echo-b", "boss-1")

        seen: list[TaskEvent] = []

        async def run() -> str:
            async with a.client(timeout=60) as c:
                async for ev in c.submit(Command("boss", input="plan", task_id="boss-task")):
                    seen.append(ev)
                    if ev.task_id == "boss-task" and ev.kind == EventKind.RESULT and ev.result is not None:
                        return f"{ev.result.state}:{ev.result.output}"
            return ""

        out = await asyncio.wait_for(run(), 30)
        assert out == "succeeded:succeeded:sub of plan", out + b.log()[-2000:]
        # A serves the sub-task B ran, with its events in order, once. (The parent's live stream
        # on A carries them too (ParentRelay): tests/test_cluster_parent_relay.py.)
        async with a.client(timeout=30) as c:
            _, _, children = await c.get_task("boss-task", with_events=False)
            assert len(children) == 1, children
            sub_task, sub, _ = await c.get_task(children[0].task_id)
        assert sub_task.agent_id == "echo-b" and str(sub_task.state) == "succeeded", sub_task
        assert any(e.agent_id == "echo-b" for e in sub), sub
        assert sub[-1].kind == EventKind.RESULT and [e.seq for e in sub] == list(range(1, len(sub) + 1)), sub
    assert '"task_done"' in echo.log()  # the sub-task ran on B's agent
    assert "delegation_reply_forwarded" in b.log() and "delegation_reply_delivered" in a.log()


async def test_a_command_to_an_agent_of_the_other_daemon_gets_its_reply(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(b, "echo-b"))  # answers a COMMAND: "echo: " + its payload
    async with linked(a, Listener(), "asker-1", tmp_path) as asker:
        await listed_on(a, "echo-b")
        assert await asker.ask("echo-b", b"by id", timeout=15) == b"echo: by id"
        assert await asker.ask("type:echo", b"by type", timeout=15) == b"echo: by type"


async def test_a_broadcast_reaches_the_agents_of_every_daemon(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    async with (
        linked(a, Listener(), "talker", tmp_path) as talker,
        linked(a, Listener(), "near", tmp_path) as near,
        linked(b, Listener(), "far", tmp_path) as far,
    ):
        await listed_on(a, "far")
        env = talker._env(pb.BROADCAST, payload=b"hello all")
        env.recipient.broadcast = True
        assert talker.send(env)

        def heard(link: RecordingLink) -> bool:
            return any(e.type == pb.BROADCAST and e.payload == b"hello all" for e in link.got)

        await await_for(lambda: heard(near) and heard(far), timeout=15, what="the broadcast on both daemons")
        assert not heard(talker)
        await asyncio.sleep(0.5)  # (a duplicate would come within a tick)
        assert sum(e.type == pb.BROADCAST for e in far.got) == 1


class LongBoss(Agent):
    type = "boss"
    capabilities = ("boss",)
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        r = await ctx.delegate(Delegation("echo", input="slow", options={"delay": "30"}))
        return Outcome(output=r.output)


async def test_cancelling_a_task_stops_its_sub_task_on_the_other_daemon(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    echo = start_agent(b, "echo-b")
    agents.append(echo)
    async with linked(a, LongBoss(), "boss-1", tmp_path):
        await listed_on(a, "echo-b", "boss-1")
        async with a.client(timeout=60) as c:
            stream = c.submit(Command("boss", input="plan", task_id="boss-task"))
            first = await asyncio.wait_for(anext(stream), 15)
            assert first.task_id == "boss-task"

            async def child_running() -> bool:
                _, _, children = await c.get_task("boss-task", with_events=False)
                return any(ch.state == "running" for ch in children)

            await await_for(child_running, timeout=20, what="the sub-task running on B's agent")
            await c.cancel("boss-task", "stop it all")
            _, _, children = await c.get_task("boss-task", with_events=False)
        await await_for(lambda: "task_cancel_requested" in echo.log(), timeout=10, what="B's agent told to stop")

        async def child_cancelled() -> bool:
            async with b.client() as cb:
                t, _, _ = await cb.get_task(children[0].task_id, with_events=False)
                return str(t.state) == "cancelled"

        await await_for(child_cancelled, timeout=10, what="the sub-task cancelled")


class Helper(Agent):
    """Answers a COMMAND with its own name; a task keeps it busy until cancelled."""

    type = "helper"
    capabilities = ("helper",)
    needs_model = False

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def on_command(self, sender: str, payload: bytes) -> bytes:
        return self.name.encode()

    async def run(self, ctx: TaskContext) -> Outcome:
        await asyncio.sleep(30)
        return Outcome(output="done")


async def test_a_command_by_type_goes_to_an_idle_agent_of_the_other_daemon_when_all_here_are_busy(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    async with (
        linked(a, Helper("helper-a"), "helper-a", tmp_path),
        linked(b, Helper("helper-b"), "helper-b", tmp_path),
        linked(a, Listener(), "asker-1", tmp_path) as asker,
    ):
        await listed_on(a, "helper-b")
        assert await asker.ask("type:helper", b"?", timeout=15) == b"helper-a"  # idle here: this daemon's
        async with a.client(timeout=60) as c:
            stream = c.submit(Command("helper", input="x", task_id="busy-1"))
            await asyncio.wait_for(anext(stream), 15)

            async def busy() -> bool:
                t, _, _ = await c.get_task("busy-1", with_events=False)
                return t.agent_id == "helper-a" and str(t.state) in ("assigned", "running")

            await await_for(busy, timeout=15, what="helper-a busy")
            assert await asker.ask("type:helper", b"?", timeout=15) == b"helper-b"  # the idle one elsewhere
            await c.cancel("busy-1")
