"""The mesh through fake ports: delegation, the fan-out of events to subscribers, and the query
side."""

from __future__ import annotations

import pytest

from orchgpt import codec
from orchgpt.errors import RoutingError
from orchgpt.mesh import Mesh
from orchgpt.models import (
    Action,
    Delegation,
    EventKind,
    TaskEvent,
)
from orchgpt.store import MemoryStore
from tests.support import fake_ports
from tests.support.fake_ports import FakeSubscriber, connect, ok, submit

# The shared fixtures (pytest finds a fixture by its name in the test's module).
store, mesh = fake_ports.store, fake_ports.mesh

pytestmark = pytest.mark.timeout(30)


def test_a_delegated_task_answers_its_delegator_with_the_correlation_id(mesh: Mesh, store: MemoryStore) -> None:
    mgr = connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder", options={"model": "x"})
    child = mesh.on_delegate("m1", Delegation("echo", "sub", action=Action.RUN, options={"k": "v"}), "parent", "corr-1")
    assert child.parent_task_id == "parent" and child.delegated_by == "m1"
    assert child.submitted_by == "client:alice"  # the root's owner
    worker = connect(mesh, "w1")
    # routing state is a field of the task: not in the options stored or sent to the agent
    assert worker.runs[0].options == {"k": "v"} and worker.runs[0].reply_to == "corr-1"
    assert dict(codec.task_to_spec(worker.runs[0]).options) == {"k": "v"}  # the RUN's body
    stored = store.get_task(child.task_id)
    assert stored is not None and stored.options == {"k": "v"} and stored.reply_to == "corr-1"
    mesh.on_result("w1", ok(child.task_id, "sub done"))
    assert [(c, r.output) for c, r in mgr.replies] == [("corr-1", "sub done")]


def test_only_the_agent_running_the_parent_may_delegate(mesh: Mesh) -> None:
    connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder")
    with pytest.raises(RoutingError) as e:
        mesh.on_delegate("intruder", Delegation("echo", "x", action=Action.RUN), "parent", "c")
    assert e.value.code == "PERMISSION_DENIED"


def test_a_redelegated_finished_child_answers_at_once(mesh: Mesh) -> None:
    mgr = connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder")
    sub = Delegation("echo", "sub", action=Action.RUN)
    child = mesh.on_delegate("m1", sub, "parent", "corr-1", "parent.child")
    connect(mesh, "w1")
    mesh.on_result("w1", ok(child.task_id))
    again = mesh.on_delegate("m1", Delegation("echo", "sub", action=Action.RUN), "parent", "corr-2", "parent.child")
    assert again.task_id == child.task_id
    assert [c for c, _ in mgr.replies] == ["corr-1", "corr-2"]


# ---- fan-out -----------------------------------------------------------------------------


def test_subscribers_of_a_task_and_of_its_parent_get_its_events_in_order(mesh: Mesh) -> None:
    connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder")
    on_parent, on_all = FakeSubscriber(), FakeSubscriber()
    mesh.subscribe(on_parent, "parent")
    mesh.subscribe(on_all)
    child = mesh.on_delegate("m1", Delegation("echo", "sub", action=Action.RUN), "parent", "c1")
    connect(mesh, "w1")
    mesh.on_event("w1", TaskEvent(child.task_id, EventKind.TOKEN, text="tok"))
    mesh.on_result("w1", ok(child.task_id))
    child_events = [e for e in on_parent.events if e.task_id == child.task_id]
    assert [e.seq for e in child_events] == list(range(1, len(child_events) + 1))
    assert [e.kind for e in child_events][-2:] == [EventKind.TOKEN, EventKind.RESULT]
    assert [e.task_id for e in on_all.events if e.task_id == child.task_id] == [e.task_id for e in child_events]
    assert on_parent.closed == ""  # the parent still runs


def test_a_finished_task_closes_its_subscribers_and_its_events_are_stored(mesh: Mesh, store: MemoryStore) -> None:
    connect(mesh, "a1")
    submit(mesh, "t1")
    sub = FakeSubscriber()
    mesh.subscribe(sub, "t1")
    mesh.on_result("a1", ok("t1"))
    assert sub.closed == "task finished"
    assert [e.seq for e in store.events("t1")] == [e.seq for e in mesh.replay("t1")] and sub.events


def test_a_slow_subscriber_is_dropped_not_waited_for(mesh: Mesh) -> None:
    connect(mesh, "a1")
    submit(mesh, "t1")
    slow = FakeSubscriber(room=1)
    mesh.subscribe(slow, "t1")
    for i in range(3):
        mesh.on_event("a1", TaskEvent("t1", EventKind.TOKEN, text=str(i)))
    assert "too slow" in slow.closed and len(slow.events) == 1


def test_replay_then_follow_misses_nothing_and_doubles_nothing(mesh: Mesh) -> None:
    connect(mesh, "a1")
    submit(mesh, "t1")
    mesh.on_event("a1", TaskEvent("t1", EventKind.LOG, text="before"))
    sub = FakeSubscriber()
    replayed, following = mesh.replay_then_follow("t1", 1, sub)
    assert following and [e.seq for e in replayed] == list(range(2, 2 + len(replayed)))
    mesh.on_event("a1", TaskEvent("t1", EventKind.LOG, text="after"))
    assert [e.text for e in sub.events] == ["after"]
    assert sub.events[0].seq == replayed[-1].seq + 1
    mesh.unsubscribe(sub, "t1")
    mesh.on_result("a1", ok("t1"))
    late = FakeSubscriber()
    replayed, following = mesh.replay_then_follow("t1", 0, late)
    assert not following and replayed[-1].kind == EventKind.RESULT and not late.events


# ---- the query side ----------------------------------------------------------------------


def test_task_with_children_merges_live_and_stored_children(mesh: Mesh) -> None:
    connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder")
    done = mesh.on_delegate("m1", Delegation("echo", "a", action=Action.RUN), "parent", "c1")
    connect(mesh, "w1")
    mesh.on_result("w1", ok(done.task_id))
    live = mesh.on_delegate("m1", Delegation("echo", "b", action=Action.RUN), "parent", "c2")
    t, children = mesh.task_with_children("parent")  # type: ignore[misc]
    assert t.task_id == "parent"
    assert [c.task_id for c in children] == [done.task_id, live.task_id]
    assert children[1] is live  # the live object, not a stale stored copy
    assert mesh.task_with_children("missing") is None


def test_forwarding_picks_agents_through_the_registry(mesh: Mesh) -> None:
    a, b = connect(mesh, "a1"), connect(mesh, "b1")
    c = connect(mesh, "c1", "coder")
    assert mesh.link_of("a1") is a and mesh.link_of("zz") is None
    submit(mesh, "t1")  # a1 busy
    assert mesh.pick_agent("echo", key=0) == "b1"  # the idle one
    assert mesh.pick_agent("nope", key=0) == ""
    assert set(map(id, mesh.links_except("a1"))) == {id(b), id(c)}
    assert mesh.tasks_on("a1") == {"t1"} and mesh.tasks_on("b1") == set()
