"""How the stores keep A2A push-notification configs (orchgpt/a2a/push.py, docs/a2a.md).

A config is kept as its JSON text (the a2a module converts; the store sees no protobuf), per
(task, config id), so that a daemon restarted while a task runs still tells its webhooks.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..models import now_ms


class PushConfigStore(ABC):
    @abstractmethod
    def put_push_config(self, task_id: str, config_id: str, config_json: str) -> None:
        """Add or replace the config ``config_id`` of the task."""

    @abstractmethod
    def push_configs(self, task_id: str) -> list[tuple[str, str]]:
        """(config id, JSON) of the task's configs, oldest first."""

    @abstractmethod
    def delete_push_config(self, task_id: str, config_id: str) -> None: ...

    @abstractmethod
    def unfinished_push_tasks(self) -> list[str]:
        """Ids of the unfinished tasks that have configs (watched again after a restart)."""


class SqlitePushConfigs(PushConfigStore):
    """The SQL, shared by the SQLite and PostgreSQL stores (their ``_tx`` and ``_read``)."""

    if TYPE_CHECKING:

        @contextmanager
        def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]: ...
        def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    def put_push_config(self, task_id: str, config_id: str, config_json: str) -> None:
        with self._tx(f"store push config {config_id} of task {task_id}") as c:
            c.execute(
                "INSERT INTO a2a_push_configs (task_id, config_id, config, created_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (task_id, config_id) "
                "DO UPDATE SET config = excluded.config",
                (task_id, config_id, config_json, now_ms()),
            )

    def push_configs(self, task_id: str) -> list[tuple[str, str]]:
        rows = self._read(
            "push configs",
            "SELECT config_id, config FROM a2a_push_configs WHERE task_id = ? ORDER BY created_ms, config_id",
            (task_id,),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def delete_push_config(self, task_id: str, config_id: str) -> None:
        with self._tx(f"delete push config {config_id} of task {task_id}") as c:
            c.execute(
                "DELETE FROM a2a_push_configs WHERE task_id = ? AND config_id = ?",
                (task_id, config_id),
            )

    def unfinished_push_tasks(self) -> list[str]:
        rows = self._read(
            "tasks with push configs",
            "SELECT DISTINCT p.task_id FROM a2a_push_configs AS p "
            "JOIN tasks AS t ON t.task_id = p.task_id WHERE t.finished = 0",
        )
        return [str(r[0]) for r in rows]


class MemoryPushConfigs(PushConfigStore):
    """In memory (the ``memory:`` store)."""

    _push: dict[str, dict[str, str]]

    def _configs(self) -> dict[str, dict[str, str]]:
        if not hasattr(self, "_push"):
            self._push = {}
        return self._push

    def put_push_config(self, task_id: str, config_id: str, config_json: str) -> None:
        self._configs().setdefault(task_id, {})[config_id] = config_json

    def push_configs(self, task_id: str) -> list[tuple[str, str]]:
        return list(self._configs().get(task_id, {}).items())

    def delete_push_config(self, task_id: str, config_id: str) -> None:
        self._configs().get(task_id, {}).pop(config_id, None)

    def unfinished_push_tasks(self) -> list[str]:
        get = getattr(self, "get_task")  # noqa: B009  (MemoryStore's)
        return [
            t for t, cs in self._configs().items() if cs and (task := get(t)) is not None and not task.state.terminal
        ]
