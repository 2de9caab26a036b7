"""The mesh behind fake ports (tests/test_mesh_unit*.py): fake agent links, subscribers and
spawner, a mesh on a MemoryStore, and helpers to connect agents, submit tasks and make results."""

from __future__ import annotations

from typing import Any

import pytest

from orchgpt.mesh import Mesh, Registration
from orchgpt.models import (
    Action,
    ApprovalResponse,
    Command,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
)
from orchgpt.store import MemoryStore


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
        self.announced: list[float] = []  # intervals announced in PINGs
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

    def send_ping(self, interval: float = 0.0) -> None:
        self.pings += 1
        if interval:
            self.announced.append(interval)

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
    m = Mesh(store, builtin_types=("echo", "coder"), spawner=FakeSpawner(), max_attempts=2, reconnect_grace=5.0)
    m.strict = True  # an illegal transition raises here (it is logged in production)
    return m


def connect(
    m: Mesh, name: str, agent_type: str = "echo", current: str = "", pending: list[TaskResult] | None = None
) -> FakeLink:
    link = FakeLink()
    m.register(name, Registration(agent_type, current_task=current, pending_results=list(pending or [])), link)
    return link


def submit(m: Mesh, task_id: str, agent_type: str = "echo", **kw: Any) -> Task:
    t, created = m.submit(Command(agent_type, Action.RUN, task_id, task_id=task_id, **kw), submitted_by="client:alice")
    assert created
    return t


def ok(task_id: str, out: str = "done") -> TaskResult:
    return TaskResult(task_id, TaskState.SUCCEEDED, output=out)
