"""Domain objects of the mesh: tasks, events, results, agents, sessions.

Plain dataclasses; nothing here knows about protobuf or gRPC (see codec.py).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum

from .checks import Check


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


def child_task_id(parent_task_id: str, key: str) -> str:
    """The id of a delegated sub-task: derived from its parent's id and its place in the plan
    (``key``), so that a re-run of the parent (after a crash) finds the children it made
    before instead of making new ones. At most 64 characters (the task id rule)."""
    digest = hashlib.sha256(f"{parent_task_id}\0{key}".encode()).hexdigest()[:32]
    return f"{parent_task_id[:31]}.{digest}"


class TaskState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})

# Allowed transitions of the task state machine (enforced by mesh.Mesh._set_state).
# From QUEUED, besides ASSIGNED: RUNNING when the agent of an earlier attempt reconnects still
# running it before anyone else took it (no second RUN); SUCCEEDED (or FAILED) when the late
# result of an earlier attempt arrives while it waits, or when the daemon answers it itself
# (the STATUS and TERMINATE actions).
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset(
        {TaskState.ASSIGNED, TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.ASSIGNED: frozenset(
        {TaskState.RUNNING, TaskState.QUEUED, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.RUNNING: frozenset({TaskState.QUEUED, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class Action(StrEnum):
    CREATE = "create"
    RUN = "run"
    TERMINATE = "terminate"
    STATUS = "status"


class EventKind(StrEnum):
    STATUS = "status"
    LOG = "log"
    TOKEN = "token"
    ARTIFACT = "artifact"
    STEP = "step"
    RESULT = "result"
    APPROVAL = "approval"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    calls: int = 0

    def add(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.calls += other.calls
        if other.model and not self.model:
            self.model = other.model
        return self

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Artifact:
    path: str
    size: int = 0
    sha256: str = ""
    kind: str = ""


@dataclass
class TaskResult:
    task_id: str
    state: TaskState
    output: str = ""
    error: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    workspace: str = ""
    agent_type: str = ""
    agent_id: str = ""
    data: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)  # what judged the work (orchgpt/checks.py)

    @property
    def ok(self) -> bool:
        return self.state == TaskState.SUCCEEDED


@dataclass
class Command:
    """What a user asks: `/<agent_type> <action> [input] [| language]` (the CLI's grammar parses a
    line into one; Submit carries it; the mesh turns it into a Task)."""

    agent_type: str
    action: Action = Action.RUN
    input: str = ""
    language: str = "python"
    session_id: str = ""
    task_id: str = ""
    approval: bool = False
    options: dict[str, str] = field(default_factory=dict)

    def for_session(self, session_id: str, approval: bool = False) -> Command:
        """A copy to submit in ``session_id``; ``approval`` forces approval mode on."""
        return replace(self, session_id=session_id, approval=self.approval or approval, options=dict(self.options))


@dataclass
class Delegation:
    """A sub-task an agent asks for while it runs a task (DELEGATE_TASK): the parent is the
    task the agent is running."""

    agent_type: str
    input: str
    language: str = "python"
    action: Action = Action.CREATE
    options: dict[str, str] = field(default_factory=dict)
    inputs: list[TaskResult] = field(default_factory=list)
    # The sub-task's stable place in the parent's plan (e.g. "step-3" or "backend#1"). With a
    # key the sub-task's id is derived from the parent's id and the key (child_task_id), so that
    # a re-run of the parent (after a crash) gets the existing sub-task (its result, or the
    # running one) instead of a second one. Without a key every delegation makes a new sub-task.
    key: str = ""


@dataclass
class Task:
    """What the mesh runs: a Command accepted (or a Delegation), with its state. An agent
    receives one too (the RUN's TaskSpec): there ``attempts`` is this attempt's number."""

    task_id: str
    agent_type: str
    action: Action = Action.RUN
    input: str = ""
    language: str = "python"
    session_id: str = ""
    parent_task_id: str = ""
    approval: bool = False
    options: dict[str, str] = field(default_factory=dict)
    state: TaskState = TaskState.QUEUED
    agent_id: str = ""
    attempts: int = 0
    created_ms: int = field(default_factory=now_ms)
    updated_ms: int = field(default_factory=now_ms)
    result: TaskResult | None = None
    error: str = ""
    submitted_by: str = ""
    # The agent that delegated this task (DELEGATE_TASK), which gets its events.
    delegated_by: str = ""
    inputs: list[TaskResult] = field(default_factory=list)
    # Routing state, never sent to agents: the correlation id of the DELEGATE_TASK that asked
    # for this task; its result goes back to ``delegated_by`` in a REPLY carrying it.
    reply_to: str = ""


# TaskEvent.data key set by orchgpt on a token event that stands for several deltas: the seq of
# the first (the event stands for data[SEQ_FROM]..seq); what an agent puts there is dropped
SEQ_FROM = "seq_from"


def first_seq(ev: TaskEvent) -> int:
    """The seq of the first delta a numbered event stands for (its ``seq`` unless folded)."""
    first = ev.data.get(SEQ_FROM) if ev.data else None
    return int(first) if first else ev.seq


@dataclass
class TaskEvent:
    """Something that happened to a task: the common fields of every event kind.

    Events are typed: each kind is its own class (``StatusEvent``, ``LogEvent``, ``TokenEvent``,
    ``StepEvent``, ``ArtifactEvent``, ``ApprovalEvent``, ``ResultEvent``; ``Event`` is their
    union), tagged by ``kind`` as the protobuf ``TaskEvent.body`` oneof is. Constructing the base
    class with a kind gives that kind's class (``TaskEvent(t, EventKind.LOG)`` is a ``LogEvent``),
    so code may match on the class or compare ``kind``.

    ``agent_type`` is the type of the agent the task is for (orchgpt stamps it on the wire);
    ``encoded`` is opaque to the domain: the event as it arrived on the wire, kept by the
    transport so that relaying it does not encode it again (orchgpt.wire.codec.encode_event).
    It stands for every field but ``seq``, ``agent_id`` and ``parent_task_id`` (re-stamped when
    sent): code that changes another field of a received event clears it.
    """

    task_id: str
    kind: EventKind
    seq: int = 0
    state: TaskState | None = None
    text: str = ""
    artifact: Artifact | None = None
    result: TaskResult | None = None
    agent_id: str = ""
    parent_task_id: str = ""
    data: dict[str, str] = field(default_factory=dict)
    ts_ms: int = field(default_factory=now_ms)
    approval: ApprovalRequest | None = None
    agent_type: str = ""
    # not an __init__ argument: dataclasses.replace() (a changed event) does not carry it over
    encoded: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __new__(cls, *args: object, **kwargs: object) -> TaskEvent:
        if cls is TaskEvent:
            kind = args[1] if len(args) > 1 else kwargs.get("kind")
            if kind is not None:
                cls = EVENT_CLASSES[EventKind(kind)]  # type: ignore[arg-type]
        return object.__new__(cls)


@dataclass
class StatusEvent(TaskEvent):
    """The task's state changed (``state``), e.g. RUNNING "running on a1"."""

    kind: EventKind = EventKind.STATUS


@dataclass
class LogEvent(TaskEvent):
    """A log line (``text``)."""

    kind: EventKind = EventKind.LOG


@dataclass
class TokenEvent(TaskEvent):
    """A model token delta (``text``): the hot path. ``deltas``: how many deltas ``text``
    concatenates (an agent folds the deltas it sends together); orchgpt numbers them
    ``data[SEQ_FROM]``..``seq`` when publishing it (docs/protocol.md, token events)."""

    kind: EventKind = EventKind.TOKEN
    # as the agent sent it (not stored: a numbered event's range is data[SEQ_FROM]..seq)
    deltas: int = field(default=1, compare=False)


@dataclass
class StepEvent(TaskEvent):
    """One step of the agent loop (``text``; details in ``data``: ``tool``, ``check``, ``ok``...)."""

    kind: EventKind = EventKind.STEP

    @property
    def ok(self) -> bool | None:
        """What the step says of itself: True, False, or None when it does not say."""
        v = self.data.get("ok")
        return None if v is None else v.strip().lower() in ("true", "1", "yes")

    @property
    def check(self) -> str:
        """The name of the check this step reports ("" when it is not a check)."""
        return self.data.get("check", "")


@dataclass
class ArtifactEvent(TaskEvent):
    """A file the task produced (``artifact``)."""

    kind: EventKind = EventKind.ARTIFACT


@dataclass
class ApprovalEvent(TaskEvent):
    """A tool call waiting for the user (``approval``)."""

    kind: EventKind = EventKind.APPROVAL


@dataclass
class ResultEvent(TaskEvent):
    """The task ended (``result``; ``state`` is its final state)."""

    kind: EventKind = EventKind.RESULT


Event = StatusEvent | LogEvent | TokenEvent | StepEvent | ArtifactEvent | ApprovalEvent | ResultEvent
EVENT_CLASSES: dict[EventKind, type[TaskEvent]] = {
    EventKind.STATUS: StatusEvent,
    EventKind.LOG: LogEvent,
    EventKind.TOKEN: TokenEvent,
    EventKind.STEP: StepEvent,
    EventKind.ARTIFACT: ArtifactEvent,
    EventKind.APPROVAL: ApprovalEvent,
    EventKind.RESULT: ResultEvent,
}


@dataclass
class ApprovalRequest:
    request_id: str
    tool: str
    arguments_json: str = ""
    summary: str = ""
    # a question for the user (a workflow's user_proxy turn) rather than a tool call: the
    # answer comes back in ApprovalResponse.answer; ``choices``: the answers offered
    question: str = ""
    choices: list[str] = field(default_factory=list)


class ApprovalDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    APPROVE_NEXT = "approve_next"
    FEEDBACK = "feedback"


@dataclass
class ApprovalResponse:
    request_id: str
    decision: ApprovalDecision
    count: int = 1
    feedback: str = ""
    answer: str = ""  # the user's answer to ApprovalRequest.question


class AgentState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    LOST = "lost"


@dataclass(slots=True)  # one per connected agent
class AgentInfo:
    agent_id: str
    agent_type: str
    capabilities: list[str] = field(default_factory=list)
    host: str = ""
    state: AgentState = AgentState.IDLE
    current_task: str = ""
    last_heartbeat_ms: int = 0
    local: bool = False
    connected_ms: int = 0
    daemon: str = ""  # the daemon of the cluster it is connected to (docs/scaling.md)
    # its slots (tasks it runs at once; 1: one at a time) and every task it runs, in the order
    # they were assigned (current_task is the first of them: the one old clients show)
    max_concurrent_tasks: int = 1
    running_tasks: list[str] = field(default_factory=list)


@dataclass
class SessionInfo:
    session_id: str
    created_ms: int = 0
    updated_ms: int = 0
    task_count: int = 0
    message_count: int = 0
    usage: Usage = field(default_factory=Usage)
    usage_by_agent: dict[str, Usage] = field(default_factory=dict)
    published: bool = False
    tags: list[str] = field(default_factory=list)
    title: str = ""


@dataclass
class SessionMessage:
    """One message of a session's transcript: a command, its result, a workflow's turn."""

    message_id: str
    session_id: str
    task_id: str = ""
    speaker: str = ""
    role: str = "assistant"  # user | assistant | summary
    content: str = ""
    ts_ms: int = field(default_factory=now_ms)
    n: int = 0  # its place among its task's messages
