"""The agent runtime API: specialised agents are plain classes.

    @register
    class EchoAgent(Agent):
        type = "echo"
        capabilities = ("echo",)

        async def run(self, ctx: TaskContext) -> Outcome:
            ctx.log("echoing")
            return Outcome(output=ctx.task.input)

`run` receives a TaskContext: the task, its workspace directory, and methods
that stream events to the orchestrator (status, log, token, step, artifact),
delegate sub-tasks to other agent types, and ask the user for approval. It
returns an Outcome, or raises TaskFailed with a reason. Cancellation arrives as
asyncio.CancelledError inside `run`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from orchgpt.checks import Check
from orchgpt.models import (
    EVENT_CLASSES,
    ApprovalEvent,
    ApprovalRequest,
    ApprovalResponse,
    Artifact,
    ArtifactEvent,
    Delegation,
    EventKind,
    StatusEvent,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
    new_id,
)

from .settings import AgentSettings


@dataclass
class Outcome:
    """What `Agent.run` returns."""

    output: str = ""
    ok: bool = True
    error: str = ""
    data: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)  # agentd.checks.attach sets them


Emit = Callable[[TaskEvent], None]
Delegate = Callable[[Delegation], Awaitable[TaskResult]]
Approve = Callable[[ApprovalRequest], Awaitable[ApprovalResponse]]
Ask = Callable[[str, bytes, float], Awaitable[bytes]]


class TaskContext:
    """Everything a running task may touch. Emitting never blocks."""

    def __init__(
        self,
        task: Task,
        workspace: Path | Callable[[], Path],
        agent_id: str,
        emit: Emit,
        delegate: Delegate | None = None,
        approve: Approve | None = None,
        settings: AgentSettings | None = None,
        ask: Ask | None = None,
    ) -> None:
        self.task = task
        # the workspace directory, or what makes it on first use (agentd's link: a task that never
        # touches its workspace, an echo, costs no directory)
        self._workspace: Path | None = None if callable(workspace) else workspace
        self._make_workspace: Callable[[], Path] | None = workspace if callable(workspace) else None
        self.agent_id = agent_id
        self.settings = settings
        self.usage = Usage()
        self.artifacts: dict[str, Artifact] = {}
        self._emit = emit
        self._delegate = delegate
        self._approve = approve
        self._ask = ask
        # (results, into) -> paths fetched: their files from the daemon (set by agentd.inputs)
        self.fetch_files: Callable[[list[TaskResult], Path], Awaitable[list[str]]] | None = None

    @property
    def workspace(self) -> Path:
        """The task's workspace directory (made on first use)."""
        ws = self._workspace
        if ws is None:
            make, self._make_workspace = self._make_workspace, None
            assert make is not None
            ws = self._workspace = make()
        return ws

    @workspace.setter
    def workspace(self, path: Path) -> None:
        self._workspace, self._make_workspace = path, None

    @property
    def workspace_made(self) -> bool:
        """Whether the task used its workspace (``workspace`` was read or set)."""
        return self._workspace is not None

    # ---- events
    def event(self, kind: EventKind, text: str = "", **data: str) -> None:
        self._emit(
            EVENT_CLASSES[kind](
                task_id=self.task.task_id,
                kind=kind,
                text=text,
                agent_id=self.agent_id,
                parent_task_id=self.task.parent_task_id,
                data={k: str(v) for k, v in data.items()},
            )
        )

    def status(self, text: str, state: TaskState = TaskState.RUNNING) -> None:
        self._emit(
            StatusEvent(
                task_id=self.task.task_id,
                state=state,
                text=text,
                agent_id=self.agent_id,
                parent_task_id=self.task.parent_task_id,
            )
        )

    def log(self, text: str) -> None:
        self.event(EventKind.LOG, text)

    def token(self, text: str) -> None:
        if text:
            self.event(EventKind.TOKEN, text)

    def step(self, text: str, **data: str) -> None:
        self.event(EventKind.STEP, text, **data)

    def artifact(self, path: str | Path, kind: str = "") -> Artifact:
        """Record a file of the workspace as an artifact (size and sha256 computed here)."""
        p = Path(path)
        full = p if p.is_absolute() else self.workspace / p
        data = full.read_bytes()
        rel = str(full.resolve().relative_to(self.workspace.resolve()))
        art = Artifact(path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest(), kind=kind)
        self.artifacts[rel] = art
        self._emit(
            ArtifactEvent(
                task_id=self.task.task_id,
                artifact=art,
                text=rel,
                agent_id=self.agent_id,
                parent_task_id=self.task.parent_task_id,
            )
        )
        return art

    def add_usage(self, usage: Usage) -> None:
        self.usage.add(usage)

    # ---- mesh
    async def delegate(self, sub: Delegation) -> TaskResult:
        """Run a sub-task on another agent type (DELEGATE_TASK) and wait for its result."""
        if self._delegate is None:
            raise RuntimeError("this context cannot delegate")
        return await self._delegate(sub)

    async def delegate_many(self, subs: list[Delegation]) -> list[TaskResult]:
        return list(await asyncio.gather(*(self.delegate(s) for s in subs)))

    async def ask(self, to: str, payload: bytes, timeout: float = 30.0) -> bytes:
        """Send a COMMAND to another agent and return its REPLY's payload.

        ``to``: an agent id, or ``type:NAME`` for any agent of type NAME. Raises
        agentd.errors.AskTimeout after ``timeout`` seconds, AskError when it cannot be delivered
        (no such agent, refused by the orchestrator, not connected)."""
        if self._ask is None:
            raise RuntimeError("this context cannot ask other agents")
        return await self._ask(to, payload, timeout)

    async def approve(self, tool: str, arguments_json: str, summary: str = "") -> ApprovalResponse:
        """Ask the user to approve a tool call; blocks until they answer."""
        if self._approve is None:
            raise RuntimeError("this context cannot ask for approval")
        req = ApprovalRequest(request_id=new_id(), tool=tool, arguments_json=arguments_json, summary=summary)
        self._emit(
            ApprovalEvent(
                task_id=self.task.task_id,
                approval=req,
                text=summary,
                agent_id=self.agent_id,
                parent_task_id=self.task.parent_task_id,
            )
        )
        return await self._approve(req)

    async def ask_user(self, question: str, choices: list[str] | None = None) -> ApprovalResponse:
        """Ask the user a question through the approval path (an APPROVAL event with
        ``question``); the answer is the response's ``answer`` (or its feedback)."""
        if self._approve is None:
            raise RuntimeError("this context cannot ask the user")
        req = ApprovalRequest(
            request_id=new_id(),
            tool="user_proxy",
            summary=question[:200],
            question=question,
            choices=list(choices or []),
        )
        self._emit(
            ApprovalEvent(
                task_id=self.task.task_id,
                approval=req,
                text=question,
                agent_id=self.agent_id,
                parent_task_id=self.task.parent_task_id,
            )
        )
        return await self._approve(req)


class Agent:
    """Base class of every agent type."""

    type: ClassVar[str] = ""
    capabilities: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True  # agentd loads the model settings (and fails without them)

    def __init__(self, settings: AgentSettings | None = None) -> None:
        self.settings = settings

    async def on_command(self, sender: str, payload: bytes) -> bytes:
        """Answer a COMMAND another agent sent (its `TaskContext.ask`): the REPLY's payload.
        Default: echo the payload (a mesh round-trip check). Runs beside the current task."""
        return payload

    async def run(self, ctx: TaskContext) -> Outcome:
        raise NotImplementedError


AGENT_TYPES: dict[str, type[Agent]] = {}


def register(cls: type[Agent]) -> type[Agent]:
    """Class decorator: make an agent type available to agentd."""
    if not cls.type:
        raise ValueError(f"{cls.__name__} has no type")
    AGENT_TYPES[cls.type] = cls
    return cls


def agent_class(agent_type: str) -> type[Agent]:
    """The class of a built-in agent type; only its own module is imported."""
    import importlib

    from .builtin import available_types

    if agent_type not in AGENT_TYPES and agent_type in available_types():
        importlib.import_module(f"{__package__}.agents.{agent_type}")
    try:
        return AGENT_TYPES[agent_type]
    except KeyError:
        raise KeyError(
            f"unknown agent type {agent_type!r}; built-in types: {', '.join(sorted(available_types()))}"
        ) from None
