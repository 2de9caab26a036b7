"""The mesh: registry of agents, task state machine, routing and queues.

Domain code only: it talks to agents through the AgentLink protocol and to
clients through Subscriber objects; the gRPC servicer implements both.
``Mesh`` is the facade the rest of orchgpt uses. Its parts, by concern:
mesh_registry.py (agents: state and the rules for their comings and goings),
mesh_dispatch.py (queues, assignment, requeue, reconnect-grace holds),
mesh_fanout.py (event numbering, buffering for the store, subscribers),
mesh_queries.py (the read side the transport uses), mesh_from_agents.py (events, results,
refusals and delegations from agents); here the task state machine, submit and cancel.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from typing import Any, Protocol

from . import heartbeats, logs, mesh_slots, transcripts
from .errors import ErrorCode, OrchgptError, RoutingError, StoreError
from .mesh_dispatch import DispatchRules, TaskQueues
from .mesh_fanout import EventFanout, Subscriber
from .mesh_from_agents import FromAgents
from .mesh_queries import MeshQueries
from .mesh_registry import (
    AGENT_TYPE_RE,
    LOCAL_PREFIX,
    AgentEntry,
    AgentLink,
    AgentRegistry,
    AgentRules,
    Registration,
)
from .models import (
    TRANSITIONS,
    Action,
    ApprovalResponse,
    Command,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    new_id,
    now_ms,
)
from .store import Store
from .task_options import task_options
from .waiting import WaitingNotes
from .workflows import WorkflowBook

__all__ = [
    "AGENT_TYPE_RE",
    "LOCAL_PREFIX",
    "TASK_ID_RE",
    "AgentEntry",
    "AgentLink",
    "IllegalTransition",
    "Mesh",
    "Registration",
    "SpawnerPort",
    "Subscriber",
]

log = logs.get("orchgpt.mesh")

TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# ORCHGPT_STRICT_TRANSITIONS=1 (the test suite sets it): an illegal state change raises
STRICT_ENV = "ORCHGPT_STRICT_TRANSITIONS"


class IllegalTransition(OrchgptError, RuntimeError):
    """A task state change that models.TRANSITIONS does not allow: a bug in the mesh."""

    code = ErrorCode.INTERNAL


class SpawnerPort(Protocol):
    def can_spawn(self, agent_type: str) -> bool: ...
    def starting(self, agent_type: str) -> int: ...
    def spawn(self, agent_type: str) -> None: ...
    def terminate(self, agent_id: str) -> bool: ...
    def is_local(self, agent_id: str) -> bool: ...
    def registered(self, agent_id: str) -> None: ...
    def assigned(self, agent_id: str) -> None: ...


class Mesh(MeshQueries, AgentRules, DispatchRules, FromAgents):
    """The facade: commands change tasks and agents (here); queries read them (mesh_queries.py)."""

    def __init__(
        self,
        store: Store,
        builtin_types: Iterable[str] = (),
        spawner: SpawnerPort | None = None,
        max_attempts: int = 3,
        heartbeat_interval: float = 5.0,
        heartbeat_misses: int = 3,
        reconnect_grace: float = 15.0,
    ) -> None:
        self.store = store
        self.builtin_types = frozenset(builtin_types)
        self.spawner = spawner
        self.max_attempts = max_attempts
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_misses = heartbeat_misses
        self.agents_per_interval = heartbeats.AGENTS_PER_INTERVAL  # orchgpt.heartbeats (a setting)
        self.max_agent_concurrency = mesh_slots.DEFAULT_MAX_AGENT_CONCURRENCY  # most slots of an agent (a setting)
        self.local_slots = 1  # the slots of each agent it spawns (local_agent_concurrency)
        self.hb_wheel: heartbeats.Wheel[AgentEntry] = heartbeats.Wheel(heartbeat_interval)
        self.reconnect_grace = reconnect_grace
        # the three concerns, each behind its own small interface (mesh_*.py)
        self.registry = AgentRegistry()
        self.queues = TaskQueues()
        self.fanout = EventFanout(store, self._parent_of)
        self.strict = os.environ.get(STRICT_ENV) == "1"  # an illegal transition raises
        self._closing = False
        self.stats = {"submitted": 0, "completed": 0, "requeued": 0, "routed": 0}
        self.waiting = WaitingNotes()  # tells queued tasks what they wait for (orchgpt/waiting.py)
        self.daemon_id = ""  # this daemon's address (AgentInfo.daemon); the server sets it
        self.cluster: Any = None  # cluster.Cluster with --cluster: daemons sharing PostgreSQL (orchgpt/cluster.py)
        self.workflows: WorkflowBook | None = None  # the server sets it (orchgpt/workflows.py)

    # the components' state, under the names the rest of the mesh (and older tests) use
    @property
    def agents(self) -> dict[str, AgentEntry]:
        return self.registry.agents

    @property
    def active(self) -> dict[str, Task]:
        return self.queues.active

    def _parent_of(self, task_id: str) -> str:
        t = self.queues.active.get(task_id)
        return t.parent_task_id if t is not None else ""

    # ------------------------------------------------------------------ lifecycle
    def recover(self, journals: dict[str, list[TaskResult]] | None = None) -> int:
        """Load unfinished tasks from the store after a (re)start; returns how many.

        ``journals``: results that local agents of the previous orchgpt finished (and wrote
        down) but that it never stored; they finish their tasks instead of a second run.
        """
        journaled = {(agent, r.task_id): r for agent, rs in (journals or {}).items() for r in rs}
        n = 0
        deadline = time.monotonic() + self.reconnect_grace
        for t in self.store.unfinished_tasks():
            if self.cluster is not None and not self.cluster.mine(t.task_id):
                continue  # another daemon's, or offered to all (cluster.py)
            self.active[t.task_id] = t
            self.fanout.start(t.task_id, self.store.last_seq(t.task_id))
            if t.state == TaskState.QUEUED or not t.agent_id:
                t.state = TaskState.QUEUED  # (as it was stored: not a transition)
                self.queues.enqueue(t)
            elif (t.agent_id, t.task_id) in journaled:
                r = journaled[(t.agent_id, t.task_id)]
                r.data["recovered_from"] = "agent journal"
                self._finish(t, r)
            elif t.agent_id.startswith(LOCAL_PREFIX):
                self._requeue(t, f"orchestrator restarted; local agent {t.agent_id} is gone")
            else:
                self.queues.hold(t.task_id, deadline, "orchestrator restarted")
            n += 1
        for agent_type in list(self.queues.queues):
            self._dispatch(agent_type)
        if n:
            log.info("tasks_recovered", count=n, awaiting_agents=len(self.queues.awaiting))
        return n

    def start_closing(self) -> None:
        self._closing = True

    @property
    def running_tasks(self) -> int:
        return self.queues.running()

    def flush(self) -> None:
        """Write buffered events to the store."""
        self.fanout.flush()

    def log_message(
        self, type_: str, sender: str, recipient: str, task: Task | None = None, correlation_id: str = ""
    ) -> None:
        """The IAC message log: who sent what about which task (written with the events)."""
        self.fanout.log_message(type_, sender, recipient, task, correlation_id)

    # ------------------------------------------------------------------ agents
    def known_types(self) -> set[str]:
        return set(self.builtin_types) | self.registry.types() | self._remote_types()

    # ------------------------------------------------------------------ tasks
    def submit(
        self,
        cmd: Command,
        submitted_by: str,
        parent_task_id: str = "",
        delegated_by: str = "",
        reply_to: str = "",
        inputs: list[TaskResult] | None = None,
    ) -> tuple[Task, bool]:
        """Accept a command. Returns (task, created); created is False for a resubmitted task id."""
        if self._closing:
            raise RoutingError("orchgpt is shutting down; not accepting new work", code="UNAVAILABLE")
        if cmd.task_id and not TASK_ID_RE.match(cmd.task_id):
            raise RoutingError(
                f"invalid task id {cmd.task_id!r}: use 1-64 letters, digits, '_', '.', ':' or '-'",
                code="INVALID_ARGUMENT",
            )
        if cmd.task_id:
            existing = self.active.get(cmd.task_id) or self.store.get_task(cmd.task_id)
            if existing is not None:
                return existing, False
        agent_type = cmd.agent_type
        if cmd.action in (Action.CREATE, Action.RUN):
            if agent_type not in self.known_types():
                known = ", ".join(sorted(self.known_types())) or "none"
                raise RoutingError(f"unknown agent type {agent_type!r}; known types: {known}", code="NOT_FOUND")
            if not self._has_capacity(agent_type):
                raise RoutingError(
                    f"no {agent_type} agent is connected and orchgpt cannot spawn one (spawning disabled "
                    "or the local agent limit is 0)",
                    code="FAILED_PRECONDITION",
                )
        # a workflow's or a graph's definition, from the daemon's own files and store
        options = task_options(self.store, self.workflows, self.known_types(), cmd, submitted_by)
        task = Task(
            task_id=cmd.task_id or new_id(),
            agent_type=agent_type,
            action=cmd.action,
            input=cmd.input,
            language=cmd.language or "python",
            session_id=cmd.session_id or new_id(),
            parent_task_id=parent_task_id,
            approval=cmd.approval,
            options=options,
            submitted_by=submitted_by,
            delegated_by=delegated_by,
            inputs=list(inputs or []),
            reply_to=reply_to,
        )
        stored, created = self.store.create_task(task)  # raises StoreError: not accepted
        if not created:
            return stored, False
        self.store.relax()  # its commit may wait, unless it is assigned now (that write may not)
        self.active[task.task_id] = task
        self.fanout.start(task.task_id, fresh=True)
        self.stats["submitted"] += 1
        self.log_message(
            "DELEGATE_TASK" if delegated_by else "COMMAND",
            delegated_by or submitted_by,
            f"type:{agent_type}",
            task,
            correlation_id=reply_to,
        )
        log.info(
            "task_accepted",
            task_id=task.task_id,
            agent_type=agent_type,
            action=str(cmd.action),
            parent_task_id=parent_task_id or None,
            submitted_by=submitted_by,
        )
        self._publish(
            TaskEvent(
                task.task_id,
                EventKind.STATUS,
                state=TaskState.QUEUED,
                text=f"queued for {agent_type}",
                parent_task_id=parent_task_id,
            )
        )
        if cmd.action == Action.TERMINATE:
            self._finish(task, TaskResult(task.task_id, TaskState.SUCCEEDED, output=self._terminate_type(agent_type)))
        elif cmd.action == Action.STATUS:
            self._finish(task, TaskResult(task.task_id, TaskState.SUCCEEDED, output=self._status_text(agent_type)))
        elif self.cluster is not None and not self.cluster.keep(task):
            self.cluster.release(task)  # for a daemon with an agent of its type
        else:
            self.queues.enqueue(task)
            self._dispatch(agent_type)
        return task, True

    def cancel(self, task_id: str, reason: str = "") -> Task:
        t = self.active.get(task_id)
        if t is None:
            stored = self.store.get_task(task_id)
            if stored is None:
                raise RoutingError(f"no task {task_id!r}", code="NOT_FOUND")
            return self.cluster.cancel(stored, reason) if self.cluster else stored  # (finished)
        why = reason or "cancelled by the user"
        for child in self.queues.children(task_id):
            self.cancel(child.task_id, f"parent task cancelled: {why}")
        if self.cluster is not None:  # and those run by other daemons (cluster_requests.py)
            self.cluster.cancel_children(task_id, f"parent task cancelled: {why}")
        if t.state == TaskState.QUEUED:
            self.queues.dequeue(t)
        elif t.agent_id in self.agents:
            self.agents[t.agent_id].link.send_cancel(task_id, why)
            self.log_message("CANCEL", "orchgpt", t.agent_id, t)
        self._finish(
            t, TaskResult(task_id, TaskState.CANCELLED, error=why, agent_type=t.agent_type, agent_id=t.agent_id)
        )
        return t

    def approve(self, task_id: str, response: ApprovalResponse) -> None:
        t = self.active.get(task_id)
        if t is None and self.cluster is not None and self.cluster.approve(task_id, response):
            return  # sent to the daemon of the cluster that holds the task
        if t is None or not t.agent_id or t.agent_id not in self.agents:
            raise RoutingError(f"task {task_id!r} is not running on a connected agent", code="NOT_FOUND")
        self.agents[t.agent_id].link.send_approval(task_id, response)
        self.log_message("APPROVAL_RESPONSE", "orchgpt", t.agent_id, t)

    # ------------------------------------------------------------------ internals
    def _set_state(self, t: Task, state: TaskState, deferred: bool = False) -> None:
        """``deferred``: the row is written with the next flush of events (a routine RUNNING)."""
        if state not in TRANSITIONS[t.state]:
            log.error("illegal_transition", task_id=t.task_id, from_state=str(t.state), to_state=str(state))
            if self.strict:
                raise IllegalTransition(f"task {t.task_id}: {t.state} -> {state} is not in models.TRANSITIONS")
        t.state = state
        t.updated_ms = now_ms()
        if deferred:
            self.fanout.defer_save(t)
            return
        self.fanout.pending_tasks.pop(t.task_id, None)  # written now
        try:
            self.store.save_task(t)
        except StoreError as exc:
            log.error("store_write_failed", what="task", task_id=t.task_id, error=str(exc))

    def _finish(self, t: Task, result: TaskResult) -> None:
        result.task_id = t.task_id
        result.agent_type = result.agent_type or t.agent_type
        result.agent_id = result.agent_id or t.agent_id
        notes = self.queues.requeues.pop(t.task_id, None)
        if notes:
            result.data["requeued"] = "; ".join(notes)
        t.result = result
        t.error = result.error
        self._publish(
            TaskEvent(
                t.task_id,
                EventKind.RESULT,
                state=result.state,
                result=result,
                text=result.output if result.ok else result.error,
                agent_id=t.agent_id,
                parent_task_id=t.parent_task_id,
            )
        )
        self.fanout.pending_tasks.pop(t.task_id, None)  # its last write holds its state
        self.flush()
        self._set_state(t, result.state)
        transcripts.record(self.store, t)  # the session's messages (orchgpt/transcripts.py)
        self.queues.forget(t.task_id)
        self.stats["completed"] += 1
        log.info(
            "task_finished",
            task_id=t.task_id,
            state=str(result.state),
            agent_id=t.agent_id or None,
            error=result.error or None,
        )
        self.fanout.finished(t.task_id)
        self._reply_to_delegator(t)

    def _publish(self, ev: TaskEvent) -> None:
        self.fanout.publish(ev)

    def subscribe(self, sub: Subscriber, task_id: str = "") -> None:
        self.fanout.subscribe(sub, task_id)
        if self.cluster is not None and not task_id:
            self.cluster.every.subscribed()  # every task: the other daemons' too

    def unsubscribe(self, sub: Subscriber, task_id: str = "") -> None:
        self.fanout.unsubscribe(sub, task_id)
        if self.cluster is not None and task_id:
            self.cluster.unfollow(sub, task_id)
