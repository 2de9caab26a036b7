"""The mesh through its ports only: a fake AgentLink, a fake Subscriber, the memory store.

No daemon, no gRPC: dispatch, requeue, cancel, delegation, fan-out and the task state
machine, each checked at the step where it applies (issue 12, item 3).
"""

from __future__ import annotations

from typing import Any

import pytest

from orchgpt import codec
from orchgpt import mesh as mesh_module
from orchgpt.errors import RoutingError
from orchgpt.mesh import IllegalTransition, Mesh, Registration
from orchgpt.models import (
    TRANSITIONS,
    Action,
    AgentState,
    ApprovalResponse,
    Command,
    Delegation,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
)
from orchgpt.store import MemoryStore

pytestmark = pytest.mark.timeout(30)


class FakeLink:
    """An AgentLink that records what the mesh sends."""

    def __init__(self) -> None:
        self.runs: list[Task] = []
        self.cancels: list[tuple[str, str]] = []
        self.replies: list[tuple[str, TaskResult]] = []
        self.approvals: list[str] = []
        self.forwarded: list[object] = []
        self.terminated = ""
        self.pings = 0
        self.closed = ""

    def send_task(self, task: Task) -> None:
        self.runs.append(task)

    def send_cancel(self, task_id: str, reason: str) -> None:
        self.cancels.append((task_id, reason))

    def send_terminate(self, reason: str) -> None:
        self.terminated = reason

    def send_approval(self, task_id: str, response: ApprovalResponse) -> None:
        self.approvals.append(task_id)

    def send_reply(self, correlation_id: str, result: TaskResult) -> None:
        self.replies.append((correlation_id, result))

    def send_ping(self) -> None:
        self.pings += 1

    def forward(self, message: object) -> None:
        self.forwarded.append(message)

    def close(self, reason: str, code: str = "UNAVAILABLE") -> None:
        self.closed = reason


class FakeSubscriber:
    def __init__(self, room: int = 1000) -> None:
        self.events: list[TaskEvent] = []
        self.room = room
        self.closed = ""

    def deliver(self, event: TaskEvent) -> bool:
        if len(self.events) >= self.room:
            return False
        self.events.append(event)
        return True

    def close(self, reason: str) -> None:
        self.closed = reason


class FakeSpawner:
    """The SpawnerPort: records the starts asked for; the agents it "starts" never come."""

    def __init__(self) -> None:
        self.spawned: list[str] = []

    def can_spawn(self, agent_type: str) -> bool:
        return True

    def starting(self, agent_type: str) -> int:
        return self.spawned.count(agent_type)

    def spawn(self, agent_type: str) -> None:
        self.spawned.append(agent_type)

    def terminate(self, agent_id: str) -> bool:
        return False

    def is_local(self, agent_id: str) -> bool:
        return False

    def registered(self, agent_id: str) -> None: ...
    def assigned(self, agent_id: str) -> None: ...


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def mesh(store: MemoryStore) -> Mesh:
    m = Mesh(store, builtin_types=("echo", "coder"), spawner=FakeSpawner(), max_attempts=2,
             reconnect_grace=5.0)
    m.strict = True  # an illegal transition raises here (it is logged in production)
    return m


def connect(m: Mesh, name: str, agent_type: str = "echo", current: str = "",
            pending: list[TaskResult] | None = None) -> FakeLink:
    link = FakeLink()
    m.register(name, Registration(agent_type, current_task=current,
                                  pending_results=list(pending or [])), link)
    return link


def submit(m: Mesh, task_id: str, agent_type: str = "echo", **kw: Any) -> Task:
    t, created = m.submit(Command(agent_type, Action.RUN, task_id, task_id=task_id, **kw),
                          submitted_by="client:alice")
    assert created
    return t


def ok(task_id: str, out: str = "done") -> TaskResult:
    return TaskResult(task_id, TaskState.SUCCEEDED, output=out)


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


# ---- delegation --------------------------------------------------------------------------


def test_a_delegated_task_answers_its_delegator_with_the_correlation_id(
        mesh: Mesh, store: MemoryStore) -> None:
    mgr = connect(mesh, "m1", "coder")
    submit(mesh, "parent", "coder", options={"model": "x"})
    child = mesh.on_delegate("m1", Delegation("echo", "sub", action=Action.RUN, options={"k": "v"}),
                             "parent", "corr-1")
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
    again = mesh.on_delegate("m1", Delegation("echo", "sub", action=Action.RUN),
                             "parent", "corr-2", "parent.child")
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
    assert [e.task_id for e in on_all.events if e.task_id == child.task_id] == [
        e.task_id for e in child_events]
    assert on_parent.closed == ""  # the parent still runs


def test_a_finished_task_closes_its_subscribers_and_its_events_are_stored(
        mesh: Mesh, store: MemoryStore) -> None:
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

    def spy(t: Task, state: TaskState) -> None:
        seen.append((t.state, state))
        real(t, state)

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
