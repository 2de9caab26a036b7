"""What agents send the mesh (FromAgents, mixed into mesh.Mesh): task events, results (each task
settled exactly once, whenever its result arrives), refusals, and delegations, whose results go
back to the delegating agent in a REPLY."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import logs, mesh_slots
from .errors import RoutingError, StoreError
from .models import Action, Command, Delegation, EventKind, Task, TaskEvent, TaskResult, TaskState

if TYPE_CHECKING:
    from .mesh_dispatch import TaskQueues
    from .mesh_registry import AgentEntry, AgentRegistry
    from .store import Store

log = logs.get("orchgpt.mesh")


class FromAgents:
    """Events, results, refusals and delegations from agents (part of mesh.Mesh)."""

    if TYPE_CHECKING:  # provided by mesh.Mesh and its other parts
        registry: AgentRegistry
        queues: TaskQueues
        store: Store
        max_attempts: int
        cluster: Any  # cluster.Cluster | None

        @property
        def agents(self) -> dict[str, AgentEntry]: ...
        @property
        def active(self) -> dict[str, Task]: ...

        def submit(
            self,
            cmd: Command,
            submitted_by: str,
            parent_task_id: str = "",
            delegated_by: str = "",
            reply_to: str = "",
            inputs: list[TaskResult] | None = None,
        ) -> tuple[Task, bool]: ...
        def _set_state(self, t: Task, state: TaskState, deferred: bool = False) -> None: ...
        def _finish(self, t: Task, result: TaskResult) -> None: ...
        def _publish(self, ev: TaskEvent) -> None: ...
        def _dispatch(self, agent_type: str) -> None: ...
        def _requeue(self, t: Task, reason: str) -> None: ...
        def log_message(
            self, type_: str, sender: str, recipient: str, task: Task | None = None, correlation_id: str = ""
        ) -> None: ...

    def on_event(self, agent_id: str, ev: TaskEvent) -> None:
        t = self.active.get(ev.task_id)
        if t is None or t.agent_id != agent_id:
            return  # stale: the task moved on (requeued, cancelled) after this agent lost it
        if ev.kind == EventKind.RESULT:
            return  # results come as REPLY
        if t.state == TaskState.ASSIGNED:  # any event of its agent: the task runs
            self._set_state(t, TaskState.RUNNING, deferred=True)  # stored with the event (issue 17)
        ev.agent_id = agent_id
        ev.parent_task_id = t.parent_task_id
        self._publish(ev)

    def on_result(self, agent_id: str, result: TaskResult) -> None:
        entry = self.agents.get(agent_id)
        if entry is not None:
            mesh_slots.settle_slot(self.registry, entry, result.task_id)
        self._settle(agent_id, result, "reply")
        if entry is not None:
            self._dispatch(entry.info.agent_type)

    def _settle(self, agent_id: str, result: TaskResult, how: str) -> None:
        """A result from an agent settles its task exactly once, whenever it arrives."""
        t = self.active.get(result.task_id)
        if t is None or t.state.terminal:
            log.info(
                "result_already_settled", task_id=result.task_id, agent_id=agent_id, how=how, state=str(result.state)
            )
            return
        if t.agent_id != agent_id:
            if not self.queues.ran_before(t.task_id, agent_id):
                log.warning(
                    "result_from_other_agent_dropped",
                    task_id=t.task_id,
                    agent_id=agent_id,
                    assigned_to=t.agent_id or None,
                )
                return
            if result.state == TaskState.CANCELLED:
                log.info("stale_result_dropped", task_id=t.task_id, agent_id=agent_id, state=str(result.state))
                return
            # the late result of an earlier attempt counts: the task stops waiting or running
            log.info(
                "late_result_settles_task", task_id=t.task_id, agent_id=agent_id, how=how, then_on=t.agent_id or None
            )
            if t.state == TaskState.QUEUED:
                self.queues.dequeue(t)
            elif t.agent_id in self.agents:
                self.agents[t.agent_id].link.send_cancel(t.task_id, f"finished by {agent_id} in an earlier attempt")
            t.agent_id = agent_id
        self.log_message("REPLY", agent_id, "orchgpt", t)
        result.agent_id = agent_id
        result.agent_type = t.agent_type
        self._finish(t, result)

    def on_refused(self, agent_id: str, task_id: str, reason: str, code: str = "") -> None:
        """RUN_REFUSED: the agent does not take the task (busy, unsupported). It goes back to the
        queue without counting an attempt; too many refusals in a row fail it with the reason."""
        entry = self.agents.get(agent_id)
        t = self.active.get(task_id)
        if t is None or t.agent_id != agent_id or t.state.terminal:
            log.info("stale_refusal_ignored", task_id=task_id, agent_id=agent_id)
            return
        why = f"agent {agent_id} refused it ({code or 'REFUSED'}: {reason or 'no reason given'})"
        log.info("run_refused", task_id=task_id, agent_id=agent_id, code=code or None, reason=reason or None)
        if entry is not None and mesh_slots.release(entry, task_id):
            if code.upper() == "BUSY":  # a busy agent tells us when it is free (its REPLY)
                entry.full = True
                self.registry.not_idle(entry)
            mesh_slots.restate(entry)
        n = self.queues.refusals[task_id] = self.queues.refusals.get(task_id, 0) + 1
        t.attempts = max(t.attempts - 1, 0)
        self.queues.awaiting.pop(task_id, None)
        if n > max(self.max_attempts, 1) * 3:
            self._finish(
                t,
                TaskResult(
                    task_id,
                    TaskState.FAILED,
                    agent_type=t.agent_type,
                    agent_id=agent_id,
                    error=f"{why}; refused {n} times",
                ),
            )
        else:
            self._requeue(t, why)
        if entry is not None and mesh_slots.free(entry) > 0 and self.agents.get(agent_id) is entry:
            self.registry.mark_idle(entry)
            self._dispatch(entry.info.agent_type)

    def on_delegate(
        self, agent_id: str, d: Delegation, parent_task_id: str, correlation_id: str, task_id: str = ""
    ) -> Task:
        """``d`` asked for by ``agent_id`` under its running task; ``task_id``: the sub-task's id
        the agent derived from the delegation's key (a re-run attaches to the existing one)."""
        parent = self.active.get(parent_task_id)
        if parent is None or parent.agent_id != agent_id:
            raise RoutingError(
                f"agent {agent_id} is not running task {parent_task_id!r}; it cannot delegate under it",
                code="PERMISSION_DENIED",
            )
        if task_id:
            attached = self._attach_child(agent_id, task_id, parent_task_id, correlation_id)
            if attached is not None:
                return attached
        # with approval on, its sub-tasks ask too
        cmd = Command(
            agent_type=d.agent_type,
            input=d.input,
            language=d.language,
            task_id=task_id,
            action=d.action if d.action in (Action.CREATE, Action.RUN) else Action.CREATE,
            session_id=parent.session_id,
            approval=parent.approval,
            options=dict(d.options),
        )
        # the sub-task belongs to the root's owner (orchgpt.authz); delegated_by names the agent
        task, _ = self.submit(
            cmd,
            submitted_by=parent.submitted_by or agent_id,
            parent_task_id=parent_task_id,
            delegated_by=agent_id,
            reply_to=correlation_id,
            inputs=list(d.inputs),
        )
        if task.state.terminal and task.result is not None:
            # a resubmitted, already finished sub-task: answer at once
            self._reply_to_delegator(task)
        return task

    def _attach_child(self, agent_id: str, task_id: str, parent_task_id: str, correlation_id: str) -> Task | None:
        """A delegation with a known id (a re-run of its parent): the existing sub-task answers
        this delegation (its result now, or when it finishes) rather than running again."""
        existing = self.active.get(task_id) or self.store.get_task(task_id)
        if existing is None:
            return None
        if existing.parent_task_id != parent_task_id:
            raise RoutingError(
                f"task id {task_id!r} is taken by a task that is not a sub-task of {parent_task_id!r}",
                code="ALREADY_EXISTS",
            )
        log.info(
            "delegation_attached",
            task_id=task_id,
            parent_task_id=parent_task_id,
            state=str(existing.state),
            delegated_by=agent_id,
        )
        existing.delegated_by = agent_id
        existing.reply_to = correlation_id
        if existing.state.terminal:
            self._reply_to_delegator(existing)  # answered at once with its result
        else:
            try:
                self.store.save_task(existing)
            except StoreError as exc:
                log.error("store_write_failed", what="task", task_id=task_id, error=str(exc))
        return existing

    def _reply_to_delegator(self, t: Task) -> None:
        reply_to = t.reply_to
        if not (t.delegated_by and reply_to and t.result):
            return
        e = self.agents.get(t.delegated_by)
        if e is not None:
            e.link.send_reply(reply_to, t.result)
        elif self.cluster is not None:  # the delegator is on another daemon (cluster_messages.py)
            try:
                self.cluster.send_delegation_reply(t.delegated_by, reply_to, t.result)
            except StoreError as exc:
                log.error("store_write_failed", what="delegation reply", task_id=t.task_id, error=str(exc))
                return
        else:
            return
        self.log_message("REPLY", "orchgpt", t.delegated_by, t, correlation_id=reply_to)
