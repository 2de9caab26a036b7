"""Agent slots (issue 17): an agent that asks for N slots (agentd --concurrency N,
Register.max_concurrent_tasks) runs up to N tasks at once; the daemon caps the slots
(max_agent_concurrency), holds every running task of a lost agent and resumes those its
reconnect lists (running_tasks) without a second RUN. Real daemon, real agentd, mutual TLS.
Concurrency is asserted by overlapping RUNNING intervals (event order), never by durations."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Action, AgentInfo, Command, EventKind, TaskEvent, TaskResult, TaskState
from orchgpt.wire import codec
from tests.support.mesh import AgentProc, Daemon, await_for, issue, start_agent
from tests.support.proxy import CutProxy
from tests.support.stub_agent import StubAgent

pytestmark = pytest.mark.timeout(120)


def runs(record: Path) -> Counter[str]:
    """Finished runs per task id (the echo agent's record file: lines "TASK_ID INPUT")."""
    if not record.exists():
        return Counter()
    return Counter(line.split(" ", 1)[0] for line in record.read_text().splitlines() if line)


async def agents_of(d: Daemon) -> dict[str, AgentInfo]:
    try:
        async with d.client() as c:
            return {a.agent_id: a for a in await c.list_agents()}
    except Exception:  # the daemon is busy starting
        return {}


async def registered(d: Daemon, *names: str) -> None:
    async def there() -> bool:
        return set(names) <= set(await agents_of(d))

    await await_for(there, 30, what=f"{', '.join(names)} to register")


class Follower:
    """One task submitted and followed to its result (its events kept)."""

    def __init__(self, d: Daemon, cmd: Command) -> None:
        self.cmd = cmd
        self.events: list[TaskEvent] = []
        self.run = asyncio.create_task(self._follow(d))

    async def _follow(self, d: Daemon) -> None:
        async with d.client() as c:
            async for ev in c.submit(self.cmd):
                self.events.append(ev)

    def started(self, agent: str = "") -> int | None:
        """When its agent said it runs (the RUNNING status), or None."""
        for e in self.events:
            if e.kind == EventKind.STATUS and e.state == TaskState.RUNNING and e.agent_id in (agent or e.agent_id,):
                return e.ts_ms
        return None

    @property
    def result(self) -> TaskResult:
        last = self.events[-1]
        assert last.kind == EventKind.RESULT and last.result is not None, self.events
        return last.result

    @property
    def ended(self) -> int:
        return self.events[-1].ts_ms


async def submit_in_order(d: Daemon, cmds: list[Command]) -> list[Follower]:
    """Submitted one after the other (each accepted before the next: the queue's order)."""
    out = []
    for cmd in cmds:
        f = Follower(d, cmd)
        await await_for(lambda f=f: bool(f.events), 20, what=f"{cmd.task_id} to be accepted")
        out.append(f)
    return out


def echo(task_id: str, delay: str, record: Path | None = None) -> Command:
    opts = {"delay": delay, **({"record": str(record)} if record else {})}
    return Command("echo", Action.RUN, task_id, task_id=task_id, options=opts)


async def test_an_agent_with_four_slots_runs_four_tasks_at_once_and_the_fifth_waits(
    daemon_factory, agents: list[AgentProc], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn").start()
    agents.append(start_agent(d, "wide-1", extra_args=["--concurrency", "4"]))
    await registered(d, "wide-1")
    record = tmp_path / "runs.txt"
    fs = await submit_in_order(d, [echo(f"slot-{i}", "3", record) for i in range(5)])
    first, fifth = fs[:4], fs[4]
    await await_for(lambda: all(f.started("wide-1") for f in first), 30, what="four tasks running on wide-1")
    info = (await agents_of(d))["wide-1"]
    assert info.max_concurrent_tasks == 4 and info.state == "busy", info
    assert sorted(info.running_tasks) == [f"slot-{i}" for i in range(4)], info
    assert info.current_task in info.running_tasks
    await asyncio.wait_for(asyncio.gather(*(f.run for f in fs)), 60)
    # the four ran at the same time: each started before any of them ended
    assert max(f.started("wide-1") or 0 for f in first) < min(f.ended for f in first), [f.events for f in first]
    # the fifth waited for a free slot: it started after one of the four ended
    assert (fifth.started("wide-1") or 0) >= min(f.ended for f in first)
    for f in fs:
        assert f.result.state == TaskState.SUCCEEDED and f.result.agent_id == "wide-1", f.result
    assert runs(record) == Counter({f"slot-{i}": 1 for i in range(5)})
    info = (await agents_of(d))["wide-1"]
    assert info.state == "idle" and not info.running_tasks and not info.current_task, info


async def test_an_agent_without_slots_still_runs_one_task_at_a_time(daemon_factory, agents: list[AgentProc]) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn").start()
    agents.append(start_agent(d, "narrow-1"))
    await registered(d, "narrow-1")
    fs = await submit_in_order(d, [echo("one-0", "1"), echo("one-1", "1")])
    await await_for(lambda: bool(fs[0].started()), 30, what="one-0 to run")
    info = (await agents_of(d))["narrow-1"]
    assert info.max_concurrent_tasks == 1 and info.running_tasks == ["one-0"] and info.current_task == "one-0"
    await asyncio.wait_for(asyncio.gather(*(f.run for f in fs)), 60)
    assert (fs[1].started("narrow-1") or 0) >= fs[0].ended  # no overlap
    assert [f.result.state for f in fs] == [TaskState.SUCCEEDED] * 2


async def test_a_lost_agent_with_slots_gets_all_its_tasks_back_and_runs_each_once(
    daemon_factory, agents: list[AgentProc], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn", "--reconnect-grace", "30", "--heartbeat-misses", "30").start()
    record = tmp_path / "runs.txt"
    with CutProxy(d.port) as proxy:
        extra = ["--orchestrator", f"127.0.0.1:{proxy.port}", "--concurrency", "3"]
        agents.append(start_agent(d, "flaky-1", extra_args=extra))
        await registered(d, "flaky-1")
        fs = await submit_in_order(d, [echo(f"cut-{i}", "3", record) for i in range(3)])
        await await_for(lambda: all(f.started("flaky-1") for f in fs), 30, what="three tasks running on flaky-1")
        assert sorted((await agents_of(d))["flaky-1"].running_tasks) == ["cut-0", "cut-1", "cut-2"]
        # an idle agent that would take any task the daemon gave away
        agents.append(start_agent(d, "steady-1"))
        await registered(d, "steady-1")
        proxy.cut()  # mid-run: the daemon holds all three for flaky-1, which comes back with them
        await asyncio.wait_for(asyncio.gather(*(f.run for f in fs)), 60)
        assert proxy.connections >= 2  # it did reconnect through the proxy
    for f in fs:
        assert f.result.state == TaskState.SUCCEEDED and f.result.agent_id == "flaky-1", f.result
        async with d.client() as c:
            t, _, _ = await c.get_task(f.cmd.task_id, with_events=False)
        assert t.attempts == 1, t  # no second RUN
    assert runs(record) == Counter({f"cut-{i}": 1 for i in range(3)}), d.log()[-3000:]
    log = d.log()
    assert log.count('"task_held"') == 3 and log.count('"task_resumed"') == 3, log[-3000:]


async def test_an_agent_cannot_claim_a_task_it_was_not_given(
    daemon_factory, agents: list[AgentProc], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn").start()
    agents.append(start_agent(d, "owner-1", extra_args=["--concurrency", "2"]))
    await registered(d, "owner-1")
    [f] = await submit_in_order(d, [echo("mine", "3", tmp_path / "runs.txt")])
    await await_for(lambda: bool(f.started("owner-1")), 30, what="the task to run on owner-1")
    claim = pb.Register(agent_type="echo", max_concurrent_tasks=2, running_tasks=["mine", "nosuch"])
    async with StubAgent(d.address, issue(d.certs, "rogue-1", "agent"), "rogue-1", register=claim) as rogue:
        # neither is its own: the daemon tells it to stop them, and lists neither as its
        for task_id in ("mine", "nosuch"):
            await rogue.expect(pb.CANCEL, lambda e, t=task_id: e.task_id == t)
        seen = await agents_of(d)
        assert seen["rogue-1"].running_tasks == [] and seen["owner-1"].running_tasks == ["mine"], seen
        forged = TaskResult("mine", TaskState.SUCCEEDED, output="forged")
        rogue.send(pb.REPLY, task_id="mine", reply=pb.Reply(result=codec.result_to_pb(forged)))
        await asyncio.wait_for(f.run, 30)
    assert f.result.output == "mine" and f.result.agent_id == "owner-1", f.result
    assert '"result_from_other_agent_dropped"' in d.log()


async def _refused(d: Daemon, name: str, reg: pb.Register) -> grpc.aio.AioRpcError:
    stub = StubAgent(d.address, issue(d.certs, name, "agent"), name, register=reg)
    with pytest.raises(AssertionError):  # the stream ended before a REGISTERED
        await stub.__aenter__()
    await stub.__aexit__(None, None, None)
    assert isinstance(stub.error, grpc.aio.AioRpcError), stub.error
    return stub.error


async def test_slot_fields_are_validated_and_capped(daemon_factory, agents: list[AgentProc], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--no-spawn", "--max-agent-concurrency", "8").start()
    err = await _refused(d, "greedy-1", pb.Register(agent_type="echo", max_concurrent_tasks=5000))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_concurrent_tasks: 5000" in (err.details() or "")
    over = pb.Register(agent_type="echo", max_concurrent_tasks=2, running_tasks=["a", "b", "c"])
    err = await _refused(d, "liar-1", over)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "running_tasks: 3 tasks" in (err.details() or "")
    bad_id = pb.Register(agent_type="echo", max_concurrent_tasks=2, running_tasks=["x" * 300])
    err = await _refused(d, "long-1", bad_id)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "running_tasks" in (err.details() or "")
    # more than the daemon's max_agent_concurrency: granted the cap, said in REGISTERED
    wide = pb.Register(agent_type="echo", max_concurrent_tasks=100)
    async with StubAgent(d.address, issue(d.certs, "wide-2", "agent"), "wide-2", register=wide) as stub:
        assert (await agents_of(d))["wide-2"].max_concurrent_tasks == 8
        hb = pb.Heartbeat(state=pb.IDLE, running_tasks=[f"t{i}" for i in range(1025)])
        env = stub.send(pb.HEARTBEAT, heartbeat=hb)
        e = await stub.error_for(env)
        assert e.error.code == "INVALID_ARGUMENT" and "heartbeat.running_tasks: 1025 entries" in e.error.message


def test_agentd_concurrency_must_be_1_to_1024() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "--type", "echo", "--concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--concurrency: 0: give 1 to 1024" in out.stderr, out.stderr


async def test_the_agents_the_daemon_spawns_take_its_local_agent_concurrency(
    daemon_factory,
) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--max-local-agents", "1", "--local-agent-concurrency", "3").start()
    fs = await submit_in_order(d, [echo(f"local-{i}", "2") for i in range(3)])
    await asyncio.wait_for(asyncio.gather(*(f.run for f in fs)), 90)
    agents = {f.result.agent_id for f in fs}
    assert len(agents) == 1, agents  # one local agent (the limit) ran the three
    assert max(f.started() or 0 for f in fs) < min(f.ended for f in fs), [f.events for f in fs]
