"""An in-memory store: for tests and `--store memory:`; nothing survives a restart."""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ErrorCode, StoreError
from ..models import AgentInfo, SessionInfo, SessionMessage, Task, TaskEvent, Usage
from .base import Store
from .memory_graphs import MemoryGraphs
from .memory_schedules import MemorySchedules
from .push_configs import MemoryPushConfigs


class MemoryStore(MemoryGraphs, MemorySchedules, MemoryPushConfigs, Store):
    def __init__(self) -> None:
        MemoryGraphs.__init__(self)
        MemorySchedules.__init__(self)
        self._tasks: dict[str, Task] = {}
        self._events: dict[str, list[TaskEvent]] = {}
        self._agents: dict[str, AgentInfo] = {}
        self._published: dict[str, list[str]] = {}
        self._messages: dict[str, dict[str, Any]] = {}
        self._transcript: dict[str, SessionMessage] = {}

    def close(self) -> None:
        pass

    def create_task(self, task: Task) -> tuple[Task, bool]:
        if task.task_id in self._tasks:
            return copy.deepcopy(self._tasks[task.task_id]), False
        self._tasks[task.task_id] = copy.deepcopy(task)
        return task, True

    def save_task(self, task: Task) -> None:
        self._tasks[task.task_id] = copy.deepcopy(task)

    def get_task(self, task_id: str) -> Task | None:
        t = self._tasks.get(task_id)
        return copy.deepcopy(t) if t else None

    def list_tasks(
        self, limit: int = 50, session_id: str = "", include_children: bool = False, owner: str | None = None
    ) -> list[Task]:
        ts = [
            t
            for t in self._tasks.values()
            if (include_children or not t.parent_task_id)
            and (not session_id or t.session_id == session_id)
            and (owner is None or t.submitted_by == owner)
        ]
        ts.sort(key=lambda t: t.created_ms, reverse=True)
        return [copy.deepcopy(t) for t in ts[:limit]]

    def children(self, task_id: str) -> list[Task]:
        return [copy.deepcopy(t) for t in self._tasks.values() if t.parent_task_id == task_id]

    def unfinished_tasks(self) -> list[Task]:
        ts = [t for t in self._tasks.values() if not t.state.terminal]
        ts.sort(key=lambda t: t.created_ms)
        return [copy.deepcopy(t) for t in ts]

    def append_events(self, events: list[TaskEvent]) -> None:
        for e in events:
            self._events.setdefault(e.task_id, []).append(e)

    def events(self, task_id: str, after_seq: int = 0, limit: int | None = None) -> list[TaskEvent]:
        evs = [e for e in self._events.get(task_id, []) if e.seq > after_seq]
        return evs[:limit] if limit else evs

    def last_seq(self, task_id: str) -> int:
        evs = self._events.get(task_id)
        return evs[-1].seq if evs else 0

    def record_messages(self, messages: list[dict[str, Any]]) -> None:
        for m in messages:
            self._messages.setdefault(m["id"], dict(m))

    def messages(self, task_id: str = "", session_id: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        out = [
            m
            for m in self._messages.values()
            if (not task_id or m.get("task_id") == task_id) and (not session_id or m.get("session_id") == session_id)
        ]
        return out[:limit]

    def agent_seen(self, info: AgentInfo) -> None:
        self._agents[info.agent_id] = copy.deepcopy(info)

    def _session(self, session_id: str) -> SessionInfo | None:
        tasks = [t for t in self._tasks.values() if t.session_id == session_id]
        if not tasks:
            return None
        s = SessionInfo(session_id=session_id)
        s.created_ms = min(t.created_ms for t in tasks)
        s.updated_ms = max(t.updated_ms for t in tasks)
        s.task_count = sum(1 for t in tasks if not t.parent_task_id)
        s.message_count = sum(len(self._events.get(t.task_id, [])) for t in tasks)
        for t in tasks:
            if t.result:
                s.usage.add(t.result.usage)
                s.usage_by_agent.setdefault(t.agent_type, Usage()).add(t.result.usage)
        s.published = session_id in self._published
        s.tags = list(self._published.get(session_id, []))
        first = min(tasks, key=lambda t: t.created_ms)
        s.title = f"/{first.agent_type} {first.action} {first.input}"[:120]
        return s

    def list_sessions(
        self, limit: int = 50, published_only: bool = False, owner: str | None = None
    ) -> list[SessionInfo]:
        ids = {
            t.session_id for t in self._tasks.values() if t.session_id and (owner is None or t.submitted_by == owner)
        }
        out = [s for i in ids if (s := self._session(i)) and (s.published or not published_only)]
        out.sort(key=lambda s: s.updated_ms, reverse=True)
        return out[:limit]

    def get_session(self, session_id: str) -> SessionInfo | None:
        return self._session(session_id)

    def publish_session(self, session_id: str, tags: list[str]) -> SessionInfo:
        if self._session(session_id) is None:
            raise StoreError(f"no session {session_id!r}", ErrorCode.NOT_FOUND)
        self._published[session_id] = list(tags)
        s = self._session(session_id)
        assert s is not None
        return s

    # ---- session transcripts
    def add_session_messages(self, messages: list[SessionMessage]) -> None:
        for m in messages:
            self._transcript.setdefault(m.message_id, copy.deepcopy(m))

    def session_messages(self, session_id: str, limit: int = 1000) -> list[SessionMessage]:
        ms = sorted(
            (m for m in self._transcript.values() if m.session_id == session_id),
            key=lambda m: (m.ts_ms, m.task_id, m.n),
        )
        return [copy.deepcopy(m) for m in ms[:limit]]

    def get_session_message(self, message_id: str) -> SessionMessage | None:
        m = self._transcript.get(message_id)
        return copy.deepcopy(m) if m else None

    def delete_session_message(self, message_id: str) -> int:
        return 1 if self._transcript.pop(message_id, None) is not None else 0

    def clear_session(self, session_id: str) -> int:
        gone = [k for k, m in self._transcript.items() if m.session_id == session_id]
        for k in gone:
            del self._transcript[k]
        return len(gone)

    def delete_session(self, session_id: str) -> int:
        n = self.clear_session(session_id)
        for tid in [k for k, t in self._tasks.items() if t.session_id == session_id]:
            del self._tasks[tid]
            self._events.pop(tid, None)
            n += 1
        self._messages = {k: m for k, m in self._messages.items() if m.get("session_id") != session_id}
        self._published.pop(session_id, None)
        return n
