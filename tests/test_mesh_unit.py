"""The mesh through its ports only: a fake AgentLink, a fake Subscriber, the memory store.

No daemon, no gRPC: dispatch, requeue, cancel, delegation, fan-out and the task state
machine, each checked at the step where it applies (issue 12, item 3).
"""

from __future__ import annotations

from typing import Any

import pytest

from orchgpt import mesh as mesh_module
from orchgpt.errors import RoutingError
from orchgpt.mesh import IllegalTransition, Mesh
from orchgpt.models import (
    TRANSITIONS,
    Action,
    AgentState,
    Command,
    Delegation,
    EventKind,
    Task,
    TaskEvent,
    TaskState,
)
from tests.support import fake_ports
from tests.support.fake_ports import connect, ok, submit

# The shared fixtures (pytest finds a fixture by its name in the test's module).
store, mesh = fake_ports.store, fake_ports.mesh

pytestmark = pytest.mark.timeout(30)


# ---- dispatch ----------------------------------------------------------------------------


def test_a_queued_task_goes_to_the_first_idle_agent_of_its_type(mesh: Mesh) -> None:
    t = submit(mesh, "t1")
    assert t.state == TaskState.QUEUED and mesh.queued("echo") == ["t1"]
    assert mesh.spawner.spawned == ["echo"]  # type: ignore[union-attr]  # one start asked for
    coder = connect(mesh, "c1", "coder")
    a = connect(mesh, "a1")
    assert [r.task_id for r in a.runs] == ["t1"] and not coder.runs
    assert t.state == TaskState.ASSIGNED and t.agent_id == "a1" and t.attempts == 1
    assert mesh.queued("echo") == []
    info = mesh.list_agents("echo")[0]
    assert info.state == AgentState.BUSY and info.current_task == "t1"
    mesh.on_event("a1", TaskEvent("t1", EventKind.LOG, text="working"))
    assert t.state == TaskState.RUNNING
    mesh.on_result("a1", ok("t1"))
    assert mesh.get_task("t1").state == TaskState.SUCCEEDED  # type: ignore[union-attr]
    assert mesh.list_agents("echo")[0].state == AgentState.IDLE
    assert not mesh.is_active("t1")


def test_one_task_per_agent_the_rest_wait_in_order(mesh: Mesh) -> None:
    a = connect(mesh, "a1")
    for i in range(3):
        submit(mesh, f"t{i}")
    assert [r.task_id for r in a.runs] == ["t0"] and mesh.queued("echo") == ["t1", "t2"]
    mesh.on_result("a1", ok("t0"))
    assert [r.task_id for r in a.runs] == ["t0", "t1"]


def test_unknown_type_and_bad_task_id_are_refused_by_name(mesh: Mesh) -> None:
    with pytest.raises(RoutingError, match="unknown agent type 'nope'") as e:
        mesh.submit(Command("nope", Action.RUN, "x"), submitted_by="c")
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(RoutingError, match="invalid task id") as e:
        mesh.submit(Command("echo", Action.RUN, "x", task_id="../x"), submitted_by="c")
    assert e.value.code == "INVALID_ARGUMENT"


def test_a_resubmitted_task_id_returns_the_first_task(mesh: Mesh) -> None:
    t = submit(mesh, "t1")
    again, created = mesh.submit(Command("echo", Action.RUN, "other", task_id="t1"), submitted_by="c")
    assert again is t and not created


def test_status_is_answered_by_the_daemon(mesh: Mesh) -> None:
    connect(mesh, "a1")
    t, _ = mesh.submit(Command("echo", Action.STATUS, ""), submitted_by="c")
    assert t.state == TaskState.SUCCEEDED and "1 echo agent(s)" in t.result.output  # type: ignore[union-attr]


# ---- requeue -----------------------------------------------------------------------------


def test_a_lost_agents_task_is_held_then_requeued_to_another(mesh: Mesh) -> None:
    a = connect(mesh, "a1")
    t = submit(mesh, "t1")
    mesh.on_event("a1", TaskEvent("t1", EventKind.LOG, text="x"))
    mesh.disconnect("a1", a, "connection lost")
    assert t.state == TaskState.RUNNING and mesh.running_tasks == 0  # held for a1
    for task_id, (_, why) in list(mesh.queues.awaiting.items()):
        mesh.queues.hold(task_id, 0.0, why)  # the grace is over
    mesh.heartbeat_tick()
    assert t.state == TaskState.QUEUED and t.agent_id == ""
    b = connect(mesh, "b1")
    assert [r.task_id for r in b.runs] == ["t1"] and t.attempts == 2


def test_requeue_gives_up_after_max_attempts(mesh: Mesh) -> None:
    mesh.reconnect_grace = 0.0  # no hold: requeue at once
    for name in ("a1", "a2"):
        link = connect(mesh, name)
        if name == "a1":
            submit(mesh, "t1")
        mesh.disconnect(name, link, "crashed")
    t = mesh.get_task("t1")
    assert t is not None and t.state == TaskState.FAILED
    assert "gave up after 2 attempts" in t.error and "crashed" in t.result.data["requeued"]  # type: ignore[union-attr]


def test_a_refusal_requeues_without_counting_an_attempt(mesh: Mesh) -> None:
    a = connect(mesh, "a1")
    t = submit(mesh, "t1")
    mesh.on_refused("a1", "t1", "not now", "UNSUPPORTED")
    # back in the queue, then (a1 idle again) handed out once more: same attempt number
    assert [r.task_id for r in a.runs] == ["t1", "t1"] and t.attempts == 1


def test_a_reconnecting_agent_keeps_the_task_it_still_runs(mesh: Mesh) -> None:
    a = connect(mesh, "a1")
    t = submit(mesh, "t1")
    mesh.disconnect("a1", a, "blip")
    a2 = connect(mesh, "a1", current="t1")
    assert not a2.runs and t.state == TaskState.ASSIGNED and t.agent_id == "a1"
    mesh.on_result("a1", ok("t1"))
    assert mesh.get_task("t1").state == TaskState.SUCCEEDED  # type: ignore[union-attr]


def test_resume_after_the_grace_ran_out_is_a_legal_transition(mesh: Mesh) -> None:
    """QUEUED -> RUNNING: the grace ran out and the task was requeued, but nobody took it
    before its agent came back still running it."""
    a = connect(mesh, "a1")
    t = submit(mesh, "t1")
    mesh.reconnect_grace = 0.0
    mesh.disconnect("a1", a, "blip")
    assert t.state == TaskState.QUEUED
    again = connect(mesh, "a1", current="t1")
    assert not again.runs and t.state == TaskState.RUNNING and t.agent_id == "a1"


def test_a_late_result_of_an_earlier_attempt_settles_a_queued_task(mesh: Mesh) -> None:
    a = connect(mesh, "a1")
    t = submit(mesh, "t1")
    mesh.reconnect_grace = 0.0
    mesh.disconnect("a1", a, "blip")
    assert t.state == TaskState.QUEUED
    connect(mesh, "a1", pending=[ok("t1", "from before")])
    got = mesh.get_task("t1")
    assert got is not None and got.state == TaskState.SUCCEEDED and got.result.output == "from before"  # type: ignore[union-attr]


# ---- cancel ------------------------------------------------------------------------------


def test_cancel_a_queued_task_takes_it_out_of_the_queue(mesh: Mesh) -> None:
    submit(mesh, "t1")
    t = mesh.cancel("t1", "changed my mind")
    assert t.state == TaskState.CANCELLED and t.error == "changed my mind"
    assert mesh.queued("echo") == []
    a = connect(mesh, "a1")
    assert not a.runs


def test_cancel_a_running_task_tells_its_agent_and_cancels_its_children(mesh: Mesh) -> None:
    mgr = connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder")
    child = mesh.on_delegate("m1", Delegation("echo", "sub", action=Action.RUN), "parent", "corr-1")
    mesh.cancel("parent")
    assert mgr.cancels == [("parent", "cancelled by the user")]
    assert child.state == TaskState.CANCELLED and "parent task cancelled" in child.error
    with pytest.raises(RoutingError, match="no task 'missing'"):
        mesh.cancel("missing")


# ---- the state machine -------------------------------------------------------------------


def test_an_illegal_transition_is_refused(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(mesh, "a1")
    t = submit(mesh, "t1")
    mesh.on_result("a1", ok("t1"))
    assert TaskState.RUNNING not in TRANSITIONS[TaskState.SUCCEEDED]
    logged: list[dict[str, Any]] = []
    monkeypatch.setattr(mesh_module.log, "error", lambda event, **kw: logged.append({"event": event, **kw}))
    with pytest.raises(IllegalTransition, match="succeeded -> running"):
        mesh._set_state(t, TaskState.RUNNING)
    assert logged and logged[0]["event"] == "illegal_transition" and logged[0]["task_id"] == "t1"


def test_every_transition_in_these_scenarios_is_declared(mesh: Mesh) -> None:
    """The table in models.py is the truth: record every state change the mesh made above and
    in a mixed run here, and check each against it (strict mode would have raised anyway)."""
    seen: list[tuple[TaskState, TaskState]] = []
    real = mesh._set_state

    def spy(t: Task, state: TaskState, deferred: bool = False) -> None:
        seen.append((t.state, state))
        real(t, state, deferred)

    mesh._set_state = spy  # type: ignore[method-assign]
    a = connect(mesh, "a1")
    submit(mesh, "t1")
    mesh.on_event("a1", TaskEvent("t1", EventKind.LOG))
    mesh.on_refused("a1", "t1", "busy", "BUSY")
    mesh.disconnect("a1", a, "gone")
    connect(mesh, "b1")
    mesh.on_result("b1", ok("t1"))
    submit(mesh, "t2")
    mesh.cancel("t2")
    assert seen and all(new in TRANSITIONS[old] for old, new in seen), seen
