"""The mesh's rules for agents with slots (orchgpt/mesh_slots.py), through fake ports: who gets
which RUN, when a slot comes free, what a reconnect resumes. The end-to-end behaviour (real
daemon, agentd) is tests/test_agent_slots.py."""

from __future__ import annotations

import asyncio

import pytest

from orchgpt.batching import Outbox
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.mesh import Mesh, Registration
from orchgpt.models import AgentState, TaskState
from orchgpt.servicer_link import GrpcAgentLink
from tests.support import fake_ports
from tests.support.fake_ports import FakeLink, ok, submit

store, mesh = fake_ports.store, fake_ports.mesh

pytestmark = pytest.mark.timeout(30)


def wide(m: Mesh, name: str, slots: int, running: list[str] | None = None) -> FakeLink:
    link = FakeLink()
    m.register(name, Registration("echo", max_concurrent_tasks=slots, running_tasks=list(running or [])), link)
    return link


async def test_queued_tasks_fill_the_slots_in_turn_and_one_agent_gets_its_runs_in_one_frame(mesh: Mesh) -> None:
    a, b = wide(mesh, "a", 2), wide(mesh, "b", 2)
    for i in range(5):
        submit(mesh, f"t{i}")
    assert [t.task_id for t in a.runs] == ["t0", "t2"] and [t.task_id for t in b.runs] == ["t1", "t3"]
    assert mesh.get_task("t4").state == TaskState.QUEUED  # every slot taken
    info = mesh.agents["a"].info
    assert info.running_tasks == ["t0", "t2"] and info.current_task == "t0" and info.state == AgentState.BUSY
    mesh.on_result("b", ok("t1"))
    assert [t.task_id for t in b.runs] == ["t1", "t3", "t4"]
    # over a real stream's outbox: the RUNs for the tasks queued when the agent comes go out together
    for i in range(5, 8):
        submit(mesh, f"t{i}")
    outbox = Outbox()
    mesh.register("c", Registration("echo", max_concurrent_tasks=8), GrpcAgentLink("c", outbox))
    batch = await asyncio.wait_for(outbox.next_batch(), 5)
    assert batch is not None and [e.task_id for e in batch.envelopes if e.type == pb.RUN] == ["t5", "t6", "t7"]


def test_a_busy_refusal_stops_the_runs_until_the_agents_next_result(mesh: Mesh) -> None:
    a = wide(mesh, "a", 3)
    submit(mesh, "t0")
    submit(mesh, "t1")
    mesh.on_refused("a", "t1", "full", "BUSY")  # requeued, and the agent is sent nothing more
    submit(mesh, "t2")
    assert [t.task_id for t in a.runs] == ["t0", "t1"]
    assert mesh.get_task("t1").state == TaskState.QUEUED and mesh.get_task("t2").state == TaskState.QUEUED
    mesh.on_result("a", ok("t0"))
    assert [t.task_id for t in a.runs] == ["t0", "t1", "t1", "t2"]


def test_the_granted_slots_are_capped_by_the_daemon(mesh: Mesh) -> None:
    mesh.max_agent_concurrency = 8
    wide(mesh, "a", 100)
    wide(mesh, "b", 0)  # an agent that predates slots: one
    assert mesh.slots_of("a") == 8 and mesh.slots_of("b") == 1


def test_a_reconnect_resumes_each_running_task_and_requeues_the_held_ones_it_no_longer_runs(mesh: Mesh) -> None:
    a = wide(mesh, "a", 3)
    for i in range(3):
        submit(mesh, f"t{i}")
    assert len(a.runs) == 3
    mesh.disconnect("a", a, "connection lost")
    assert set(mesh.queues.awaiting) == {"t0", "t1", "t2"}  # all three held for it
    again = wide(mesh, "a", 3, running=["t0", "t2"])
    # t0 and t2 resumed (no second RUN); t1, held but not running, requeued and given to the free slot
    assert [t.task_id for t in again.runs] == ["t1"] and not mesh.queues.awaiting
    assert mesh.agents["a"].info.running_tasks == ["t0", "t2", "t1"]
    assert mesh.get_task("t0").attempts == 1 and mesh.get_task("t1").attempts == 2


def test_a_task_named_at_reconnect_that_is_not_the_agents_takes_a_slot_until_it_stops(mesh: Mesh) -> None:
    owner = wide(mesh, "owner", 1)
    submit(mesh, "t0")
    assert owner.runs[0].task_id == "t0"
    rogue = wide(mesh, "rogue", 2, running=["t0", "ghost"])
    assert sorted(t for t, _ in rogue.cancels) == ["ghost", "t0"]
    assert mesh.get_task("t0").agent_id == "owner" and mesh.agents["rogue"].info.running_tasks == []
    submit(mesh, "t1")  # rogue has no free slot: t1 waits
    assert mesh.get_task("t1").state == TaskState.QUEUED
    mesh.heartbeat_running("rogue", ["t0"])  # it stopped ghost: one slot free
    assert [t.task_id for t in rogue.runs] == ["t1"]


def test_the_cli_shows_an_agents_tasks_and_slots() -> None:
    from cli.agents import task_cell
    from cli.render import short_id
    from orchgpt.models import AgentInfo

    busy = AgentInfo("a", "echo", current_task="t-1", running_tasks=["t-1", "t-2", "t-3"], max_concurrent_tasks=8)
    assert task_cell(busy, short_id) == "t-1 +2 (3/8)"
    assert task_cell(AgentInfo("b", "echo", current_task="t-9", running_tasks=["t-9"]), short_id) == "t-9"
    assert task_cell(AgentInfo("c", "echo"), short_id) == "-"


def test_a_queue_asks_for_as_many_local_agents_as_its_tasks_need_slots(mesh: Mesh) -> None:
    mesh.local_slots = 4  # orchgpt serve --local-agent-concurrency 4
    for i in range(6):
        submit(mesh, f"t{i}")
    assert mesh.spawner.spawned == ["echo", "echo"]  # 6 tasks, 4 an agent: two (with one slot: six)
