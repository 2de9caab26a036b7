"""The mesh's work in hand: the tasks not finished, the queue of each agent type, the tasks
held for a disconnected agent during the reconnect grace, and what earlier attempts left.

State only; the rules (who gets what, when a held task is requeued) are in mesh.Mesh.
This is the seam for several daemons sharing a store (issue 19): there the queues and
holds become rows claimed with ``FOR UPDATE SKIP LOCKED`` and leases.
"""

from __future__ import annotations

from collections import deque

from .models import Task, TaskState


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
        return sum(1 for t in self.active.values()
                   if t.state in (TaskState.ASSIGNED, TaskState.RUNNING) and t.task_id not in self.awaiting)

    def on_agent(self, agent_id: str) -> set[str]:
        return {t.task_id for t in self.active.values() if t.agent_id == agent_id}

    def children(self, task_id: str) -> list[Task]:
        return [c for c in self.active.values() if c.parent_task_id == task_id]
