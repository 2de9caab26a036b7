"""The store interface: what the orchestrator keeps about tasks, events, agents, sessions.

Calls are synchronous and short (SQLite in WAL mode); the orchestrator calls them
from its event loop. A write that fails raises StoreError with the reason; the
caller must not acknowledge work whose write failed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..graphs.records import GraphRecord
from ..models import AgentInfo, SessionInfo, SessionMessage, Task, TaskEvent
from .push_configs import PushConfigStore
from .schedules import ScheduleStore


class Store(ScheduleStore, PushConfigStore, ABC):  # store/schedules.py, store/push_configs.py
    # Called with the reason when a write is refused (gone, full, read-only): the daemon
    # stops acknowledging work and reports itself NOT_SERVING.
    on_fault: Callable[[str], None] | None = None

    @abstractmethod
    def close(self) -> None: ...

    def check(self) -> None:
        """Raise StoreError when the store can no longer keep what it is given (cheap)."""
        return None  # a store without a file of its own has nothing to check

    def probe(self) -> None:
        """A real write; raises StoreError while writes are refused."""
        return None

    def relax(self) -> None:
        """The last write may wait for the rest of its group-commit window (nothing waits on
        it at once: a task queued behind others); a store without group commit ignores it."""
        return None

    # ---- tasks
    @abstractmethod
    def create_task(self, task: Task) -> tuple[Task, bool]:
        """Store a new task. Idempotent on task_id: when it exists already, return
        (the stored task, False) and change nothing; otherwise (task, True)."""

    @abstractmethod
    def save_task(self, task: Task) -> None:
        """Persist the task's current state, agent, attempts, result and error."""

    @abstractmethod
    def get_task(self, task_id: str) -> Task | None: ...

    @abstractmethod
    def list_tasks(
        self,
        limit: int = 50,
        session_id: str = "",
        include_children: bool = False,
        owner: str | None = None,
    ) -> list[Task]:
        """Newest first. Without include_children only top-level tasks. ``owner`` (a
        ``Task.submitted_by`` value): only that owner's tasks; None: everyone's."""

    @abstractmethod
    def children(self, task_id: str) -> list[Task]: ...

    @abstractmethod
    def unfinished_tasks(self) -> list[Task]:
        """Tasks not in a terminal state, oldest first (for recovery after a crash)."""

    # ---- events
    @abstractmethod
    def append_events(self, events: list[TaskEvent]) -> None: ...

    @abstractmethod
    def events(self, task_id: str, after_seq: int = 0, limit: int | None = None) -> list[TaskEvent]: ...

    @abstractmethod
    def last_seq(self, task_id: str) -> int: ...

    # ---- the IAC message log
    @abstractmethod
    def record_messages(self, messages: list[dict[str, Any]]) -> None:
        """Log IAC message metadata (id, type, sender, recipient, task_id, session_id,
        correlation_id, ts_ms); a message id stored already is skipped."""

    @abstractmethod
    def messages(self, task_id: str = "", session_id: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """The logged messages of a task or a session, oldest first."""

    # ---- agents
    @abstractmethod
    def agent_seen(self, info: AgentInfo) -> None: ...

    # ---- sessions
    @abstractmethod
    def list_sessions(
        self, limit: int = 50, published_only: bool = False, owner: str | None = None
    ) -> list[SessionInfo]:
        """Newest first. ``owner``: only sessions holding a task that owner submitted."""

    @abstractmethod
    def get_session(self, session_id: str) -> SessionInfo | None: ...

    @abstractmethod
    def publish_session(self, session_id: str, tags: list[str]) -> SessionInfo: ...

    # ---- session transcripts (store/sqlite_transcript.py): not every store keeps them
    def add_session_messages(self, messages: list[SessionMessage]) -> None:
        raise StoreError(f"{type(self).__name__} keeps no session messages")

    def session_messages(self, session_id: str, limit: int = 1000) -> list[SessionMessage]:
        return []

    def get_session_message(self, message_id: str) -> SessionMessage | None:
        return None

    def delete_session_message(self, message_id: str) -> int:
        raise StoreError(f"{type(self).__name__} keeps no session messages")

    def clear_session(self, session_id: str) -> int:
        raise StoreError(f"{type(self).__name__} cannot clear a session")

    def delete_session(self, session_id: str) -> int:
        raise StoreError(f"{type(self).__name__} cannot delete a session")

    # ---- graphs (orchgpt/store/sqlite_graphs.py; a store without them refuses)
    def save_graph(self, graph_id: str, owner: str, name: str, definition: str) -> tuple[GraphRecord, bool]:
        """(the graph's version holding ``definition``, whether it is new): a changed definition
        makes a new version, the same one changes nothing."""
        raise StoreError("this store does not keep graphs")

    def graph_owner(self, graph_id: str) -> str | None:
        """The owner of a graph id ever saved (deleted or not); None: never saved."""
        return None

    def get_graph(self, graph_id: str, version: int = 0) -> GraphRecord | None:
        """A live graph's version (0: the latest)."""
        return None

    def list_graphs(self, owner: str | None = None, limit: int = 200) -> list[GraphRecord]:
        """The latest version of every live graph (of ``owner``), newest first."""
        return []

    def delete_graph(self, graph_id: str) -> int:
        """Mark every version of the graph deleted; how many were live."""
        return 0
