"""The mesh's query side: what the transport may ask of it, answered from the live tasks and
agents first and from the store for the rest. Read-only (subscribing aside): every change
goes through mesh.Mesh's commands.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .models import AgentInfo, SessionInfo, Task, TaskEvent

if TYPE_CHECKING:
    from .mesh_dispatch import TaskQueues
    from .mesh_fanout import EventFanout, Subscriber
    from .mesh_registry import AgentLink, AgentRegistry
    from .store import Store


class MeshQueries:
    store: Store
    registry: AgentRegistry
    queues: TaskQueues
    fanout: EventFanout
    spawner: Any  # mesh.SpawnerPort | None
    cluster: Any  # cluster.Cluster | None
    daemon_id: str

    # ---- tasks
    def get_task(self, task_id: str) -> Task | None:
        return self.queues.get(task_id) or self.store.get_task(task_id)

    def active_task(self, task_id: str) -> Task | None:
        """The task while it is unfinished (the live object), else None."""
        return self.queues.get(task_id)

    def is_active(self, task_id: str) -> bool:
        return task_id in self.queues.active

    def task_exists(self, task_id: str) -> bool:
        return task_id in self.queues.active or self.store.get_task(task_id) is not None

    def agent_type_of(self, task_id: str) -> str:
        """The agent type of an unfinished task ("" once it is finished or unknown)."""
        t = self.queues.get(task_id)
        return t.agent_type if t is not None else ""

    def queued(self, agent_type: str) -> list[str]:
        return self.queues.queued(agent_type)

    def tasks_on(self, agent_id: str) -> set[str]:
        """The unfinished tasks assigned to ``agent_id``."""
        return self.queues.on_agent(agent_id)

    def task_with_children(self, task_id: str) -> tuple[Task, list[Task]] | None:
        """The task and its sub-tasks, oldest first (unfinished ones as they are now)."""
        t = self.get_task(task_id)
        if t is None:
            return None
        children = {c.task_id: c for c in self.store.children(task_id)}
        children.update({c.task_id: c for c in self.queues.children(task_id)})
        return t, sorted(children.values(), key=lambda c: c.created_ms)

    def list_tasks(
        self, limit: int, session_id: str = "", include_children: bool = False, owner: str | None = None
    ) -> list[Task]:
        """As stored, newest first, unfinished ones as they are now."""
        tasks = self.store.list_tasks(limit, session_id, include_children, owner=owner)
        return [self.queues.active.get(t.task_id, t) for t in tasks]

    # ---- events
    def replay(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        """The task's events after ``after_seq`` (buffered ones written first)."""
        return self.fanout.replay(task_id, after_seq)

    def replay_then_follow(self, task_id: str, after_seq: int, sub: Subscriber) -> tuple[list[TaskEvent], bool]:
        """The stored events after ``after_seq``, and ``sub`` subscribed to the live ones from
        the next on (no await in between: nothing missed or doubled). The flag is False when
        the task is finished already: the replay is all there is, ``sub`` is not subscribed."""
        events = self.fanout.replay(task_id, after_seq)
        if task_id not in self.queues.active:
            if self.cluster is None:
                return events, False
            if self.cluster.follow(task_id, sub, events[-1].seq if events else after_seq):
                return events, True  # run by another daemon: followed through the store
            return self.fanout.replay(task_id, after_seq), False  # (it may have ended meanwhile)
        self.fanout.subscribe(sub, task_id)
        return events, True

    # ---- sessions
    def session_exists(self, session_id: str, owner: str | None = None) -> bool:
        """A session with a task (of ``owner``'s, unless None)."""
        return bool(session_id) and bool(self.store.list_tasks(1, session_id, True, owner))

    def list_sessions(self, limit: int, published_only: bool = False, owner: str | None = None) -> list[SessionInfo]:
        self.fanout.flush()
        return self.store.list_sessions(limit, published_only, owner=owner)

    def publish_session(self, session_id: str, tags: list[str]) -> SessionInfo:
        return self.store.publish_session(session_id, tags)

    # ---- agents
    def _remote_types(self) -> set[str]:
        """The types of the agents of the cluster's other daemons (none without --cluster)."""
        return set(self.cluster.remote_types()) if self.cluster is not None else set()

    def list_agents(self, agent_type: str = "") -> list[AgentInfo]:
        here = [
            replace(a, daemon=self.daemon_id, running_tasks=list(a.running_tasks))
            for a in self.registry.list(agent_type)
        ]
        if self.cluster is None:
            return here
        return here + list(self.cluster.remote_agents(agent_type))  # with their daemon

    def is_connected(self, agent_id: str) -> bool:
        return agent_id in self.registry

    def slots_of(self, agent_id: str) -> int:
        """The tasks a connected agent may run at once (granted at its REGISTER; 1 when unknown)."""
        e = self.registry.get(agent_id)
        return e.info.max_concurrent_tasks if e is not None else 1

    def is_idle(self, agent_id: str) -> bool:
        """Connected, idle, running nothing."""
        return self.registry.is_idle_entry(agent_id)

    def is_spawned(self, agent_id: str) -> bool:
        """``agent_id`` is an agent this daemon started (its name is reserved for it)."""
        return bool(self.spawner and self.spawner.is_local(agent_id))

    def link_of(self, agent_id: str) -> AgentLink | None:
        e = self.registry.get(agent_id)
        return e.link if e is not None else None

    def pick_agent(self, agent_type: str, key: int) -> str:
        """An agent of ``agent_type`` for a message (idle ones first; ``key`` spreads them)."""
        return self.registry.pick(agent_type, key)

    def links_except(self, agent_id: str) -> list[AgentLink]:
        """Every connected agent's link but ``agent_id``'s (a broadcast)."""
        return self.registry.links_except(agent_id)

    def close_links(self, reason: str) -> None:
        for e in list(self.registry.agents.values()):
            e.link.close(reason)

    def _status_text(self, agent_type: str) -> str:
        """The answer to a STATUS command: the type's agents and its queue."""
        agents = self.list_agents(agent_type)
        queued = len(self.queues.queues.get(agent_type, ()))
        if not agents:
            return f"no {agent_type} agents running; {queued} task(s) queued"
        lines = [f"{len(agents)} {agent_type} agent(s); {queued} task(s) queued"]
        for a in agents:
            where = "local" if a.local else (a.host or "remote")
            on = ", ".join(a.running_tasks or [a.current_task]) if a.current_task else ""
            lines.append(f"  {a.agent_id}: {a.state}{' on ' + on if on else ''} ({where})")
        return "\n".join(lines)
