"""The mesh's reconnect rules, step by step (issue 11, findings 1, 7 and 8).

Mesh with a real SQLite store; the agents' side is a recording AgentLink (the transport's
interface), so that each rule is checked at the exact step where it applies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchgpt.errors import RoutingError
from orchgpt.mesh import Mesh, Registration
from orchgpt.models import (
    Action,
    AgentState,
    ApprovalResponse,
    Command,
    Delegation,
    Task,
    TaskResult,
    TaskState,
    child_task_id,
)
from orchgpt.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(30)


class Link:
    def __init__(self) -> None:
        self.runs: list[str] = []
        self.cancels: list[str] = []
        self.replies: list[tuple[str, TaskResult]] = []
        self.closed = ""

    def send_task(self, task: Task) -> None:
        self.runs.append(task.task_id)

    def send_cancel(self, task_id: str, reason: str) -> None:
        self.cancels.append(task_id)

    def send_terminate(self, reason: str) -> None: ...
    def send_approval(self, task_id: str, response: ApprovalResponse) -> None: ...

    def send_reply(self, correlation_id: str, result: TaskResult) -> None:
        self.replies.append((correlation_id, result))

    def send_ping(self) -> None: ...

    def close(self, reason: str, code: str = "UNAVAILABLE") -> None:
        self.closed = reason


@pytest.fixture
def mesh(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteStore(str(tmp_path / "orchgpt.db"))
    m = Mesh(store, builtin_types=("echo",), max_attempts=3, reconnect_grace=5.0)
    yield m
    m.flush()
    store.close()


def connect(m: Mesh, name: str, current: str = "", pending: list[TaskResult] | None = None) -> Link:
    link = Link()
    m.register(name, Registration("echo", pending_results=list(pending or []), current_task=current), link)
    return link


def submit(m: Mesh, task_id: str, **kw: object) -> Task:
    t, _ = m.submit(Command("echo", Action.RUN, task_id, task_id=task_id, **kw), submitted_by="client:test")  # type: ignore[arg-type]
    return t


def ok(task_id: str, out: str = "done") -> TaskResult:
    return TaskResult(task_id, TaskState.SUCCEEDED, output=out)


def expire_grace(m: Mesh) -> None:
    m.queues.awaiting = {k: (0.0, why) for k, (_, why) in m.queues.awaiting.items()}
    m.heartbeat_tick()


def test_a_blip_mid_task_resumes_without_a_second_run(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    t = submit(mesh, "t1")
    assert a.runs == ["t1"]
    assert mesh.running_tasks == 1
    mesh.disconnect("a", a, "connection lost")
    assert mesh.running_tasks == 0  # held, running nowhere: a shutdown does not wait for it
    b = connect(mesh, "b")  # idle while a is away: it must not get the held task
    assert b.runs == [] and t.state == TaskState.ASSIGNED and t.agent_id == "a"
    a2 = connect(mesh, "a", current="t1")
    assert a2.runs == [] and b.runs == [] and mesh.running_tasks == 1
    assert mesh.agents["a"].info.state == AgentState.BUSY and "a" not in mesh.registry.idle["echo"]
    mesh.on_result("a", ok("t1"))
    assert t.state == TaskState.SUCCEEDED and t.attempts == 1 and t.result and t.result.agent_id == "a"
    assert mesh.agents["a"].info.state == AgentState.IDLE and "a" in mesh.registry.idle["echo"]


def test_a_result_kept_while_disconnected_settles_the_task(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    b = connect(mesh, "b")
    submit(mesh, "t1")
    assert a.runs == ["t1"]
    mesh.disconnect("a", a, "connection lost")
    connect(mesh, "a", pending=[ok("t1", "finished offline")])
    stored = mesh.store.get_task("t1")
    assert stored is not None and stored.state == TaskState.SUCCEEDED and stored.attempts == 1
    assert stored.result and stored.result.output == "finished offline"
    assert b.runs == []


def test_without_its_task_at_reconnect_the_held_task_is_requeued(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    submit(mesh, "t1")
    mesh.disconnect("a", a, "connection lost")
    a2 = connect(mesh, "a")  # the RUN never reached it
    assert a2.runs == ["t1"]


def test_the_grace_expires_then_a_late_result_still_settles_once(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    t = submit(mesh, "t1")
    mesh.disconnect("a", a, "connection lost")
    b = connect(mesh, "b")
    expire_grace(mesh)
    assert b.runs == ["t1"] and t.agent_id == "b" and t.attempts == 2
    # a comes back with the result of its attempt: it settles the task; b is told to stop
    connect(mesh, "a", pending=[ok("t1", "from a")])
    stored = mesh.store.get_task("t1")
    assert stored is not None and stored.state == TaskState.SUCCEEDED and stored.result
    assert stored.result.output == "from a"
    assert b.cancels == ["t1"]
    mesh.on_result("b", TaskResult("t1", TaskState.CANCELLED, error="cancelled"))  # b's answer: dropped
    stored = mesh.store.get_task("t1")
    assert stored is not None and stored.result and stored.result.output == "from a"
    assert mesh.agents["b"].info.state == AgentState.IDLE
    # a result for a task settled long ago: acknowledged and dropped
    connect(mesh, "a", pending=[ok("t1", "again")])
    stored = mesh.store.get_task("t1")
    assert stored is not None and stored.result and stored.result.output == "from a"


def test_a_result_from_an_agent_that_never_had_the_task_is_dropped(mesh: Mesh) -> None:
    connect(mesh, "a")
    t = submit(mesh, "t1")
    connect(mesh, "intruder", pending=[ok("t1", "forged")])
    assert t.state == TaskState.ASSIGNED and t.agent_id == "a"


def test_a_refused_run_is_requeued_without_counting_an_attempt(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    b = connect(mesh, "b")
    t = submit(mesh, "t1")
    assert a.runs == ["t1"] and t.attempts == 1
    mesh.on_refused("a", "t1", "busy with t0", "BUSY")
    assert b.runs == ["t1"] and t.attempts == 1 and t.agent_id == "b"
    # a busy agent is not idle until it reports its own task
    assert "a" not in mesh.registry.idle["echo"]
    mesh.on_result("a", ok("t0"))
    assert "a" in mesh.registry.idle["echo"]


def test_an_agent_that_keeps_refusing_fails_the_task_with_its_reason(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    t = submit(mesh, "t1")
    for _ in range(20):
        if t.state.terminal:
            break
        mesh.on_refused("a", "t1", "no such action", "UNSUPPORTED")
    assert t.state == TaskState.FAILED and "UNSUPPORTED: no such action" in t.error
    assert len(a.runs) == 10


def test_a_stale_task_at_reconnect_is_cancelled_and_the_agent_busy_until_it_answers(
    mesh: Mesh,
) -> None:
    a = connect(mesh, "a")
    submit(mesh, "t1")
    mesh.cancel("t1")
    mesh.disconnect("a", a, "connection lost")
    a2 = connect(mesh, "a", current="t1")  # still running it: it was cancelled meanwhile
    assert a2.cancels == ["t1"]
    submit(mesh, "t2")
    assert a2.runs == []
    mesh.on_result("a", TaskResult("t1", TaskState.CANCELLED))
    assert a2.runs == ["t2"]


def test_sub_tasks_of_a_task_with_approval_ask_too(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    connect(mesh, "b")
    parent = submit(mesh, "p1", approval=True)
    assert a.runs == ["p1"]
    child = mesh.on_delegate("a", Delegation("echo", "sub", action=Action.CREATE), "p1", "corr-1")
    assert parent.approval and child.approval


def test_a_rerun_parent_gets_its_existing_sub_tasks(mesh: Mesh) -> None:
    a = connect(mesh, "a")
    b = connect(mesh, "b")
    submit(mesh, "p1")
    cid0, cid1 = child_task_id("p1", "child-0"), child_task_id("p1", "child-1")
    mesh.on_delegate("a", Delegation("echo", "0", action=Action.RUN), "p1", "corr-0", cid0)
    assert b.runs == [cid0]
    mesh.on_result("b", ok(cid0, "zero"))
    assert a.replies[-1][0] == "corr-0"
    c = connect(mesh, "c")
    mesh.on_delegate("a", Delegation("echo", "1", action=Action.RUN), "p1", "corr-1", cid1)
    assert b.runs == [cid0, cid1]
    # the parent runs again elsewhere (its agent was lost) and delegates the same plan
    mesh.disconnect("a", a, "connection lost")
    expire_grace(mesh)
    assert c.runs == ["p1"]
    mesh.on_delegate("c", Delegation("echo", "0", action=Action.RUN), "p1", "corr-0b", cid0)
    assert c.replies == [("corr-0b", mesh.store.get_task(cid0).result)]  # type: ignore[union-attr]
    mesh.on_delegate("c", Delegation("echo", "1", action=Action.RUN), "p1", "corr-1b", cid1)
    assert b.runs == [cid0, cid1]  # attached, not run again
    mesh.on_result("b", ok(cid1, "one"))
    assert c.replies[-1][0] == "corr-1b" and c.replies[-1][1].output == "one"
    # an id that belongs to another parent's sub-task is refused
    submit(mesh, "p2")
    with pytest.raises(RoutingError, match="not a sub-task"):
        mesh.on_delegate(
            mesh.active["p2"].agent_id,
            Delegation("echo", "x", action=Action.RUN),
            "p2",
            "c",
            cid1,
        )


def test_child_ids_are_stable_and_within_the_task_id_rule() -> None:
    from orchgpt.mesh import TASK_ID_RE

    long_parent = "p" * 64
    for parent, key in [
        ("p1", "child-0"),
        (long_parent, "backend#2"),
        (child_task_id(long_parent, "x"), "y"),
    ]:
        cid = child_task_id(parent, key)
        assert cid == child_task_id(parent, key) and TASK_ID_RE.match(cid) and len(cid) <= 64
    assert child_task_id("p1", "a") != child_task_id("p1", "b") != child_task_id("p2", "a")


async def test_a_busy_agentd_refuses_a_run_with_run_refused(tmp_path: Path) -> None:
    from agentd.agents.echo import EchoAgent
    from agentd.link import Link as AgentLink
    from orchgpt import codec
    from orchgpt.batching import Outbox
    from orchgpt.certs import CertPaths
    from orchgpt.iac.v1 import iac_pb2 as pb

    link = AgentLink(EchoAgent(), "a", "127.0.0.1:1", CertPaths(tmp_path, tmp_path, tmp_path), tmp_path)
    link.outbox = Outbox()
    busy = link.running["t0"] = asyncio.create_task(asyncio.sleep(10))
    try:
        run = codec.new_envelope(pb.RUN, "orchgpt", task_id="t1", task=pb.TaskSpec(task_id="t1", agent_type="echo"))
        link._on_envelope(run, link.outbox)
        batch = await asyncio.wait_for(link.outbox.next_batch(), 5)
        assert batch is not None
        [env] = batch.envelopes
        assert env.type == pb.RUN_REFUSED and env.correlation_id == run.id and env.task_id == "t1"
        assert env.refusal.code == "BUSY" and "busy with t0" in env.refusal.reason
    finally:
        busy.cancel()
