"""The mesh's registry of connected agents: who is connected, of which type, who is idle,
when each was last heard from (AgentRegistry, state only), and the mesh's rules for agents
coming and going (AgentRules: what a registration settles, what a loss holds, heartbeats),
mixed into mesh.Mesh.

This is one of the seams for several daemons sharing a store (issue 19): the registry
is what each daemon knows of its own agents; a shared one lists every daemon's.
"""

from __future__ import annotations

import builtins
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import heartbeats, logs, mesh_slots
from .errors import RoutingError, StoreError
from .models import (
    AgentInfo,
    AgentState,
    ApprovalResponse,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    now_ms,
)

if TYPE_CHECKING:
    from .mesh_dispatch import TaskQueues
    from .store import Store

log = logs.get("orchgpt.mesh")

AGENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LOCAL_PREFIX = "local-"  # names of agents orchgpt spawns itself (they die with it)


class AgentLink(Protocol):
    """How the mesh talks to one connected agent (implemented by the transport)."""

    def send_task(self, task: Task) -> None: ...
    def send_cancel(self, task_id: str, reason: str) -> None: ...
    def send_terminate(self, reason: str) -> None: ...
    def send_approval(self, task_id: str, response: ApprovalResponse) -> None: ...
    def send_reply(self, correlation_id: str, result: TaskResult) -> None: ...
    def send_ping(self, interval: float = 0.0) -> None:
        """A PING; with ``interval`` > 0 it announces the agent's new heartbeat interval (seconds)."""
        ...

    def forward(self, message: object) -> None:
        """Pass another agent's message on unchanged (agent-to-agent traffic: opaque here)."""
        ...

    def close(self, reason: str, code: str = "UNAVAILABLE") -> None:
        """End the stream; ``code`` (a gRPC status name) says why (docs/protocol.md)."""
        ...


@dataclass
class Registration:
    agent_type: str
    capabilities: list[str] = field(default_factory=list)
    host: str = ""
    pid: int = 0
    version: str = ""
    pending_results: list[TaskResult] = field(default_factory=list)
    current_task: str = ""
    max_concurrent_tasks: int = 0  # its slots (0 or 1: one task at a time; mesh_slots.py)
    running_tasks: list[str] = field(default_factory=list)  # every task it still runs (reconnect)

    def running(self) -> list[str]:
        """current_task and running_tasks, once each, in order."""
        return list(dict.fromkeys(x for x in (self.current_task, *self.running_tasks) if x))


@dataclass(slots=True)  # one per connected agent
class AgentEntry:
    info: AgentInfo
    link: AgentLink
    last_seen: float = field(default_factory=time.monotonic)
    interval: float = 0.0  # its heartbeat interval (orchgpt.heartbeats; 0: the configured one)
    pinged: float = field(default_factory=time.monotonic)  # when the sweep last pinged it
    offered: float = 0.0  # an interval announced, not yet acknowledged (heartbeats.offer)
    grace: float = 0.0  # a longer interval still counted for silence until grace_until
    grace_until: float = 0.0
    stale: set[str] = field(default_factory=set)  # tasks it still runs that are no longer its own
    full: bool = False  # it refused a RUN as BUSY: no RUN until its next result
    reports_running: bool = False  # it lists its tasks in HEARTBEATs (Register.max_concurrent_tasks set)
    watches: bool = False  # it checks the daemon with PINGs of its own: no routine PINGs (heartbeats.py)


class AgentRegistry:
    def __init__(self) -> None:
        self.agents: dict[str, AgentEntry] = {}
        # agent type -> idle agent ids, in the order they became idle (a dict as an ordered set)
        self.idle: dict[str, dict[str, None]] = {}

    def get(self, agent_id: str) -> AgentEntry | None:
        return self.agents.get(agent_id)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.agents

    def add(self, entry: AgentEntry) -> AgentEntry | None:
        """Register ``entry``; returns the entry it replaces (same identity), taken out of routing."""
        old = self.agents.pop(entry.info.agent_id, None)
        if old is not None:
            self.not_idle(old)
        self.agents[entry.info.agent_id] = entry
        return old

    def remove(self, agent_id: str, link: AgentLink) -> AgentEntry | None:
        """Forget the agent when ``link`` is still its link (not replaced already)."""
        entry = self.agents.get(agent_id)
        if entry is None or entry.link is not link:
            return None
        del self.agents[agent_id]
        self.not_idle(entry)
        return entry

    def is_idle_entry(self, agent_id: str) -> bool:
        e = self.agents.get(agent_id)
        return e is not None and e.info.state == AgentState.IDLE and not e.info.running_tasks and not e.stale

    def mark_idle(self, entry: AgentEntry) -> None:
        self.idle.setdefault(entry.info.agent_type, {})[entry.info.agent_id] = None

    def not_idle(self, entry: AgentEntry) -> None:
        self.idle.get(entry.info.agent_type, {}).pop(entry.info.agent_id, None)

    def touch(self, agent_id: str, now: float, now_ms: int) -> None:
        e = self.agents.get(agent_id)
        if e is not None:
            e.last_seen = now
            e.info.last_heartbeat_ms = now_ms

    def has_type(self, agent_type: str) -> bool:
        return any(e.info.agent_type == agent_type for e in self.agents.values())

    def count_type(self, agent_type: str) -> int:
        return sum(1 for e in self.agents.values() if e.info.agent_type == agent_type)

    def types(self) -> set[str]:
        return {e.info.agent_type for e in self.agents.values()}

    def of_type(self, agent_type: str) -> list[tuple[str, AgentEntry]]:
        return [(a, e) for a, e in self.agents.items() if e.info.agent_type == agent_type]

    def list(self, agent_type: str = "") -> list[AgentInfo]:
        return sorted(
            (e.info for e in self.agents.values() if not agent_type or e.info.agent_type == agent_type),
            key=lambda a: (a.agent_type, a.agent_id),
        )

    def pick(self, agent_type: str, key: int) -> str:
        """An agent of ``agent_type`` for a message (an idle one when there is one), or ""."""
        ids = [a for a, _ in self.of_type(agent_type)]
        if not ids:
            return ""
        idle = [a for a in ids if self.agents[a].info.state == AgentState.IDLE] or ids
        return idle[key % len(idle)]

    def links_except(self, agent_id: str) -> builtins.list[AgentLink]:  # `list` is a method here
        return [e.link for a, e in self.agents.items() if a != agent_id]

    def local_running(self) -> dict[str, str]:
        """Task id -> the local agent running it."""
        return {
            task_id: agent_id for agent_id, e in self.agents.items() if e.info.local for task_id in e.info.running_tasks
        }

    def free_slots(self, agent_type: str) -> int:
        """Tasks the assignable agents of ``agent_type`` may take now."""
        return sum(mesh_slots.free(self.agents[a]) for a in self.idle.get(agent_type, ()) if a in self.agents)


class AgentRules:
    """Agents register, reconnect, go silent, are lost, withdrawn or terminated (part of mesh.Mesh)."""

    if TYPE_CHECKING:  # provided by mesh.Mesh and its other parts
        store: Store
        registry: AgentRegistry
        queues: TaskQueues
        spawner: Any
        reconnect_grace: float
        heartbeat_interval: float
        heartbeat_misses: int
        agents_per_interval: int
        max_agent_concurrency: int
        hb_wheel: heartbeats.Wheel[AgentEntry]
        cluster: Any  # cluster.Cluster | None

        @property
        def agents(self) -> dict[str, AgentEntry]: ...
        @property
        def active(self) -> dict[str, Task]: ...

        def _settle(self, agent_id: str, result: TaskResult, how: str) -> None: ...
        def _requeue(self, t: Task, reason: str) -> None: ...
        def _hold(self, t: Task, why: str) -> None: ...
        def _dispatch(self, agent_type: str) -> None: ...
        def _set_state(self, t: Task, state: TaskState) -> None: ...
        def _finish(self, t: Task, result: TaskResult) -> None: ...
        def _publish(self, ev: TaskEvent) -> None: ...

    def register(self, agent_id: str, reg: Registration, link: AgentLink) -> AgentInfo:
        if not AGENT_TYPE_RE.match(reg.agent_type):
            raise RoutingError(
                f"invalid agent type {reg.agent_type!r}: use 1-32 lowercase letters, digits, '-' or '_'",
                code="INVALID_ARGUMENT",
            )
        now = now_ms()
        local = bool(self.spawner and self.spawner.is_local(agent_id))
        info = AgentInfo(
            agent_id=agent_id,
            agent_type=reg.agent_type,
            capabilities=list(reg.capabilities),
            host=reg.host,
            state=AgentState.IDLE,
            last_heartbeat_ms=now,
            local=local,
            connected_ms=now,
            max_concurrent_tasks=mesh_slots.granted(reg.max_concurrent_tasks, self.max_agent_concurrency),
        )
        entry = AgentEntry(
            info,
            link,
            interval=heartbeats.interval_for(
                self.heartbeat_interval, len(self.agents) + (agent_id not in self.agents), self.agents_per_interval
            ),
            reports_running=reg.max_concurrent_tasks > 0,
        )
        running = reg.running()
        old = self.registry.add(entry)
        self.hb_wheel.add(entry, entry.pinged + entry.interval)
        if old is not None:
            # The same identity reconnected (the old stream is half-open): the new link wins.
            old.link.close("replaced by a new connection of the same agent", code="ABORTED")
            for task_id in old.info.running_tasks:
                t = self.active.get(task_id)
                if t is not None and t.agent_id == agent_id and not t.state.terminal:
                    self.queues.hold(t.task_id, time.monotonic(), f"agent {agent_id} replaced", keep_first=True)
        if local and self.spawner is not None:
            self.spawner.registered(agent_id)
        try:
            self.store.agent_seen(info)
        except StoreError as exc:
            log.warning("store_write_failed", what="agent", error=str(exc))
        log.info(
            "agent_registered",
            agent_id=agent_id,
            agent_type=reg.agent_type,
            host=reg.host,
            local=local,
            pending_results=len(reg.pending_results),
            running_tasks=running or None,
            slots=info.max_concurrent_tasks,
        )
        # One set of rules for a blip and for a restart of orchgpt: results kept while
        # disconnected settle their tasks (once); the task the agent still runs stays its own
        # (no second RUN); a held task it neither runs nor reports never reached it: requeue.
        if self.cluster is not None:  # failed over from another daemon: its tasks come here
            self.cluster.agent_arrived(agent_id, [*running, *(r.task_id for r in reg.pending_results)])
        for r in reg.pending_results:
            self._settle(agent_id, r, "reported at reconnect")
        for task_id in running:
            self._resume(entry, task_id)
        for task_id, (_, why) in list(self.queues.awaiting.items()):
            t = self.active.get(task_id)
            if t is not None and t.agent_id == agent_id and task_id not in running and not t.state.terminal:
                self._requeue(t, f"{why}; agent {agent_id} reconnected without it")
        if mesh_slots.free(entry) > 0:
            self.registry.mark_idle(entry)
        self._dispatch(reg.agent_type)
        return info

    def _resume(self, entry: AgentEntry, task_id: str) -> None:
        """A reconnecting agent still runs ``task_id``: it keeps it (no second RUN) if it is its."""
        info = entry.info
        if not task_id:
            return
        t = self.active.get(task_id)
        if (
            t is not None
            and not t.state.terminal
            and (
                t.agent_id == info.agent_id
                or (t.state == TaskState.QUEUED and self.queues.ran_before(task_id, info.agent_id))
            )
        ):
            if t.state == TaskState.QUEUED:  # the grace ran out, but nobody else took it yet
                self.queues.dequeue(t)
                t.agent_id = info.agent_id
                self._set_state(t, TaskState.RUNNING)
            self.queues.awaiting.pop(task_id, None)
            mesh_slots.occupy(self.registry, entry, task_id)
            log.info("task_resumed", task_id=task_id, agent_id=info.agent_id)
            self._publish(
                TaskEvent(
                    task_id,
                    EventKind.LOG,
                    agent_id=info.agent_id,
                    text=f"{info.agent_id} reconnected and goes on with it",
                    parent_task_id=t.parent_task_id,
                )
            )
            return
        # It runs something that is no longer its own (finished, cancelled or taken elsewhere):
        # stop it; its slot is taken until it answers.
        entry.stale.add(task_id)
        mesh_slots.restate(entry)
        entry.link.send_cancel(task_id, "this task was settled or moved elsewhere while you were disconnected")
        log.info("stale_task_cancelled", task_id=task_id, agent_id=info.agent_id)

    def touch(self, agent_id: str) -> None:
        self.registry.touch(agent_id, time.monotonic(), now_ms())

    def disconnect(self, agent_id: str, link: AgentLink, reason: str) -> None:
        entry = self.registry.remove(agent_id, link)
        if entry is None:
            return  # already replaced or removed
        entry.info.state = AgentState.LOST
        log.info(
            "agent_lost",
            agent_id=agent_id,
            agent_type=entry.info.agent_type,
            reason=reason,
            task_id=entry.info.current_task or None,
            running_tasks=len(entry.info.running_tasks) if entry.info.max_concurrent_tasks > 1 else None,
        )
        for task_id in entry.info.running_tasks:  # each held for it (the reconnect grace)
            t = self.active.get(task_id)
            if t is not None and t.agent_id == agent_id and not t.state.terminal:
                self._hold(t, f"agent {agent_id} lost: {reason}")
        self._dispatch(entry.info.agent_type)

    def spawn_failed(self, agent_type: str, reason: str) -> None:
        """A local agent type cannot start: fail its queued tasks rather than keep them forever."""
        if self.registry.has_type(agent_type):
            return
        if self.spawner is not None and self.spawner.starting(agent_type):
            return
        q = self.queues.queues.pop(agent_type, deque())
        for task_id in q:
            t = self.active.get(task_id)
            if t is not None and t.state == TaskState.QUEUED:
                self._finish(t, TaskResult(task_id, TaskState.FAILED, error=reason, agent_type=agent_type))

    def withdraw(self, agent_id: str) -> bool:
        """Take an idle agent out of routing because it is about to be stopped (idle timeout,
        making room for another type); False when it is busy or gone."""
        e = self.agents.get(agent_id)
        if e is None or not self.registry.is_idle_entry(agent_id):
            return False
        self.registry.not_idle(e)
        return True

    def heartbeat_running(self, agent_id: str, running: builtins.list[str]) -> None:
        """An agent with slots lists the tasks it runs (HEARTBEAT): stale ones it dropped free their slots."""
        e = self.agents.get(agent_id)
        if e is not None and e.reports_running and e.stale and mesh_slots.reconcile(self.registry, e, running):
            self._dispatch(e.info.agent_type)

    def interval_acknowledged(self, agent_id: str, interval: float, watches: bool = False) -> None:
        """The agent says it now heartbeats every ``interval`` s (its PING with the interval, or
        with ``watches``: its HEARTBEAT, from an agent that pings the daemon itself)."""
        e = self.agents.get(agent_id)
        if e is not None:
            e.watches = e.watches or watches
            heartbeats.acknowledged(e, interval, time.monotonic(), self.heartbeat_misses)

    def heartbeat_for(self, agent_id: str) -> float:
        """The heartbeat interval of a connected agent, in seconds (told in REGISTERED)."""
        e = self.agents.get(agent_id)
        return (e.interval if e is not None else 0.0) or self.heartbeat_interval

    def heartbeat_tick(self, now: float | None = None) -> None:
        """Ping the agents due (the wheel's), re-announcing intervals that no longer fit the number
        of agents; drop the silent ones; requeue tasks whose agent never came back."""
        now = time.monotonic() if now is None else now
        base, misses, agents = self.heartbeat_interval, self.heartbeat_misses, self.agents
        wanted = heartbeats.interval_for(base, len(agents), self.agents_per_interval)
        for e in self.hb_wheel.due(now):
            agent_id = e.info.agent_id
            if agents.get(agent_id) is not e:
                continue  # gone or replaced: its new entry is filed on its own
            limit = heartbeats.silence_limit(e, now, misses)
            silent = now - e.last_seen
            if silent > limit:
                e.link.close(f"no heartbeat for {silent:.1f}s", code="DEADLINE_EXCEEDED")
                self.disconnect(agent_id, e.link, f"no heartbeat for {silent:.1f}s")
                continue
            if heartbeats.ping_due(now - e.pinged, heartbeats.cadence(e), base):
                e.pinged = now
                offer = heartbeats.offer(e, wanted, now, misses)
                if offer:
                    e.link.send_ping(offer)  # "from now on, heartbeat this often"
                elif not e.watches:  # an older agent's watchdog needs to hear from us; its HEARTBEATs answer
                    e.link.send_ping()
            self.hb_wheel.add(e, min(e.pinged + heartbeats.cadence(e), e.last_seen + limit + base / 4))
        for task_id, why in self.queues.expired(now):
            t = self.active.get(task_id)
            if t is not None and not t.state.terminal and t.agent_id not in self.agents:
                self._requeue(t, f"{why}; agent {t.agent_id} did not come back within {self.reconnect_grace:g}s")

    def _terminate_type(self, agent_type: str) -> str:
        stopped = []
        for agent_id, e in list(self.agents.items()):
            if e.info.agent_type != agent_type:
                continue
            if self.spawner is not None and self.spawner.terminate(agent_id):
                pass
            e.link.send_terminate("terminated by the user")
            stopped.append(agent_id)
        if not stopped:
            return f"no {agent_type} agents running"
        return f"terminated {len(stopped)} {agent_type} agent(s): {', '.join(sorted(stopped))}"
