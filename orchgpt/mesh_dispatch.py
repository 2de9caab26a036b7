"""The mesh's work in hand: the tasks not finished, the queue of each agent type, the tasks
held for a disconnected agent during the reconnect grace, and what earlier attempts left
(TaskQueues, state only); and the dispatch rules (DispatchRules, mixed into mesh.Mesh):
who gets what, spawning for a queue, holds, requeues.
This is the seam for several daemons sharing a store (issue 19): there the queues and
holds become rows claimed with ``FOR UPDATE SKIP LOCKED`` and leases.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from . import logs, mesh_slots
from .models import EventKind, Task, TaskEvent, TaskResult, TaskState

if TYPE_CHECKING:
    from .mesh import Mesh
    from .mesh_registry import AgentEntry, AgentRegistry
    from .waiting import WaitingNotes

log = logs.get("orchgpt.mesh")


class TaskQueues:
    def __init__(self) -> None:
        self.active: dict[str, Task] = {}  # task id -> the unfinished task (the live object)
        self.queues: dict[str, deque[str]] = {}  # agent type -> queued task ids, first out first
        # task id -> (deadline, why): a task whose agent is gone (disconnected, or orchgpt
        # restarted) is held for it until the deadline (the reconnect grace), then requeued
        self.awaiting: dict[str, tuple[float, str]] = {}
        # task id -> agents of its earlier attempts (their late results still count)
        self.ran_on: dict[str, set[str]] = {}
        self.refusals: dict[str, int] = {}  # task id -> RUN_REFUSED so far (not attempts)
        self.requeues: dict[str, list[str]] = {}  # task id -> why it was requeued (reported in its result)

    def get(self, task_id: str) -> Task | None:
        return self.active.get(task_id)

    def enqueue(self, t: Task, front: bool = False) -> None:
        q = self.queues.setdefault(t.agent_type, deque())
        if front:
            q.appendleft(t.task_id)
        else:
            q.append(t.task_id)

    def dequeue(self, t: Task) -> None:
        """Take a queued task out of its queue (cancelled, settled, resumed)."""
        q = self.queues.get(t.agent_type)
        if q and t.task_id in q:
            q.remove(t.task_id)

    def queued(self, agent_type: str) -> list[str]:
        return list(self.queues.get(agent_type, ()))

    def hold(self, task_id: str, deadline: float, why: str, keep_first: bool = False) -> None:
        if keep_first:
            self.awaiting.setdefault(task_id, (deadline, why))
        else:
            self.awaiting[task_id] = (deadline, why)

    def expired(self, now: float) -> list[tuple[str, str]]:
        """The holds whose grace is over (removed): (task id, why it was held)."""
        out = [(task_id, why) for task_id, (deadline, why) in self.awaiting.items() if now >= deadline]
        for task_id, _ in out:
            del self.awaiting[task_id]
        return out

    def ran_before(self, task_id: str, agent_id: str) -> bool:
        return agent_id in self.ran_on.get(task_id, ())

    def forget(self, task_id: str) -> None:
        """The task is finished: nothing of it stays here (its requeue notes went in its result)."""
        self.active.pop(task_id, None)
        self.awaiting.pop(task_id, None)
        self.ran_on.pop(task_id, None)
        self.refusals.pop(task_id, None)

    def running(self) -> int:
        # (a task held for a disconnected agent is not running anywhere)
        return sum(
            1
            for t in self.active.values()
            if t.state in (TaskState.ASSIGNED, TaskState.RUNNING) and t.task_id not in self.awaiting
        )

    def on_agent(self, agent_id: str) -> set[str]:
        return {t.task_id for t in self.active.values() if t.agent_id == agent_id}

    def children(self, task_id: str) -> list[Task]:
        return [c for c in self.active.values() if c.parent_task_id == task_id]


class DispatchRules:
    """Queued tasks go to idle agents of their type (part of mesh.Mesh)."""

    if TYPE_CHECKING:  # provided by mesh.Mesh and its other parts
        registry: AgentRegistry
        queues: TaskQueues
        spawner: Any
        reconnect_grace: float
        local_slots: int
        max_attempts: int
        stats: dict[str, int]
        waiting: WaitingNotes
        cluster: Any  # cluster.Cluster | None

        @property
        def agents(self) -> dict[str, AgentEntry]: ...
        @property
        def active(self) -> dict[str, Task]: ...

        def _set_state(self, t: Task, state: TaskState) -> None: ...
        def _finish(self, t: Task, result: TaskResult) -> None: ...
        def _publish(self, ev: TaskEvent) -> None: ...
        def log_message(
            self, type_: str, sender: str, recipient: str, task: Task | None = None, correlation_id: str = ""
        ) -> None: ...

    def _hold(self, t: Task, why: str) -> None:
        """Keep a task for its disconnected agent during the reconnect grace."""
        if self.reconnect_grace <= 0:
            self._requeue(t, why)
            return
        self.queues.hold(t.task_id, time.monotonic() + self.reconnect_grace, why)
        log.info("task_held", task_id=t.task_id, agent_id=t.agent_id, reason=why, grace_s=self.reconnect_grace)
        self._publish(
            TaskEvent(
                t.task_id,
                EventKind.LOG,
                agent_id=t.agent_id,
                parent_task_id=t.parent_task_id,
                text=f"{why}; waiting {self.reconnect_grace:g}s for it to reconnect",
            )
        )

    def _has_capacity(self, agent_type: str) -> bool:
        if self.registry.has_type(agent_type):
            return True
        if self.cluster is not None and self.cluster.has_remote(agent_type):
            return True  # an agent of another daemon of the cluster
        return bool(self.spawner and self.spawner.can_spawn(agent_type)) or bool(
            self.spawner and self.spawner.starting(agent_type)
        )

    def _dispatch(self, agent_type: str) -> None:
        q = self.queues.queues.get(agent_type)
        if not q:
            if self.cluster is not None:
                self.cluster.wake()  # an idle agent, nothing queued here: claim offered work
            return
        idle = self.registry.idle.get(agent_type)
        # one task to each assignable agent in turn; an agent with a free slot left goes to the
        # back (its RUNs leave together, in one frame of its stream)
        while q and idle:
            agent_id = next(iter(idle))
            del idle[agent_id]
            entry = self.agents.get(agent_id)
            if entry is None or mesh_slots.free(entry) <= 0:
                continue
            task_id = q.popleft()
            t = self.active.get(task_id)
            if t is None or t.state != TaskState.QUEUED:
                idle[agent_id] = None
                continue
            self._assign(t, entry)
            if mesh_slots.free(entry) > 0:
                idle[agent_id] = None
        if q and self.spawner is not None:
            # each agent it spawns takes local_slots of them (orchgpt serve --local-agent-concurrency)
            want = -(-len(q) // max(self.local_slots, 1)) - self.spawner.starting(agent_type)
            while want > 0 and self.spawner.can_spawn(agent_type):
                self.spawner.spawn(agent_type)
                want -= 1
        self.waiting.note(cast("Mesh", self), agent_type)  # a mixin of Mesh

    def _assign(self, t: Task, entry: AgentEntry) -> None:
        t.agent_id = entry.info.agent_id
        t.attempts += 1
        self._set_state(t, TaskState.ASSIGNED)
        mesh_slots.occupy(self.registry, entry, t.task_id)
        if entry.info.local and self.spawner is not None:
            self.spawner.assigned(entry.info.agent_id)  # not idle: its idle timeout starts over
        self.stats["routed"] += 1
        self.log_message("RUN", "orchgpt", t.agent_id, t)
        self._publish(
            TaskEvent(
                t.task_id,
                EventKind.STATUS,
                state=TaskState.ASSIGNED,
                text=f"assigned to {t.agent_id} (attempt {t.attempts})",
                agent_id=t.agent_id,
                parent_task_id=t.parent_task_id,
            )
        )
        entry.link.send_task(t)

    def _requeue(self, t: Task, reason: str) -> None:
        self.queues.awaiting.pop(t.task_id, None)
        if t.attempts >= self.max_attempts:
            self._finish(
                t,
                TaskResult(
                    t.task_id,
                    TaskState.FAILED,
                    agent_type=t.agent_type,
                    agent_id=t.agent_id,
                    error=f"{reason}; gave up after {t.attempts} attempts",
                ),
            )
            return
        self.stats["requeued"] += 1
        self.queues.requeues.setdefault(t.task_id, []).append(reason)
        lost = t.agent_id
        if lost:
            self.queues.ran_on.setdefault(t.task_id, set()).add(lost)
        t.agent_id = ""
        self._set_state(t, TaskState.QUEUED)
        log.info("task_requeued", task_id=t.task_id, reason=reason, attempts=t.attempts)
        self._publish(
            TaskEvent(
                t.task_id,
                EventKind.STATUS,
                state=TaskState.QUEUED,
                agent_id=lost,
                text=f"{reason}; requeued (attempt {t.attempts + 1} of {self.max_attempts})",
                parent_task_id=t.parent_task_id,
                data={"requeued": "true"},
            )
        )
        self.queues.enqueue(t, front=True)
        self._dispatch(t.agent_type)
