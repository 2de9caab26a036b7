"""The mesh's registry of connected agents: who is connected, of which type, who is idle,
when each was last heard from. State only; the rules (what a registration settles, what a
loss holds) are in mesh.Mesh.

This is one of the seams for several daemons sharing a store (issue 19): the registry
is what each daemon knows of its own agents; a shared one lists every daemon's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Protocol

from .models import AgentInfo, AgentState, ApprovalResponse, Task, TaskResult

AGENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LOCAL_PREFIX = "local-"  # names of agents orchgpt spawns itself (they die with it)


class AgentLink(Protocol):
    """How the mesh talks to one connected agent (implemented by the transport)."""

    def send_task(self, task: Task) -> None: ...
    def send_cancel(self, task_id: str, reason: str) -> None: ...
    def send_terminate(self, reason: str) -> None: ...
    def send_approval(self, task_id: str, response: ApprovalResponse) -> None: ...
    def send_reply(self, correlation_id: str, result: TaskResult) -> None: ...
    def send_ping(self) -> None: ...

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


@dataclass
class AgentEntry:
    info: AgentInfo
    link: AgentLink
    last_seen: float = field(default_factory=time.monotonic)


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
        return e is not None and e.info.state == AgentState.IDLE and not e.info.current_task

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

    def links_except(self, agent_id: str) -> list[AgentLink]:
        return [e.link for a, e in self.agents.items() if a != agent_id]

    def local_running(self) -> dict[str, str]:
        """Task id -> the local agent running it."""
        return {e.info.current_task: agent_id for agent_id, e in self.agents.items()
                if e.info.local and e.info.current_task}
