"""The cluster's own connections to PostgreSQL (issue 19, docs/scaling.md): an async pool
(psycopg_pool.AsyncConnectionPool) for its background work, so that a slow or locked
statement of the heartbeat, the lease renewal, a claim or an event poll waits in a coroutine
and never holds the daemon's event loop.

A connection the server dropped (a restart, a failover, ``pg_terminate_backend``) fails the
statement that found it, is thrown away by the pool, and the next statement gets a new one;
one that fails before any statement ran on it (at its first round trip) is retried once on
a fresh connection. The loop's own synchronous writes (submit, state changes, event batches:
committed before they are acknowledged) stay on the store's connection (store/postgres.py).
"""

from __future__ import annotations

from typing import Any

from . import logs
from .errors import StoreError
from .models import Task, TaskEvent
from .store.postgres import _cause, _pg
from .store.sqlite_rows import _TASK_SELECT, _event_from_row, _task_from_row

log = logs.get("orchgpt.cluster")

Rows = list[tuple[Any, ...]]


class ClusterDb:
    def __init__(self, url: str, label: str, max_size: int = 4) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.url = url
        self.label = label  # the URL without its password
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=5,
            kwargs={"autocommit": True, "application_name": "orchgpt-cluster"},
        )

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close(timeout=2)

    async def run(self, what: str, statements: list[tuple[str, tuple[Any, ...]]], many: bool = False) -> Rows:
        """The statements in one transaction (``?`` placeholders); the last one's rows.
        ``many``: the last statement's params are a list of rows (executemany)."""
        import psycopg

        for attempt in (0, 1):
            began = False
            try:
                async with self.pool.connection() as conn:
                    async with conn.transaction():
                        began = True
                        rows: Rows = []
                        for i, (sql, params) in enumerate(statements):
                            if many and i == len(statements) - 1:
                                async with conn.cursor() as cur:
                                    await cur.executemany(_pg(sql), list(params))
                                continue
                            cur = await conn.execute(_pg(sql), params)
                            rows = list(await cur.fetchall()) if cur.description else []
                    return rows
            except psycopg.OperationalError as exc:
                if began or attempt:  # it may have run: not repeated behind the caller's back
                    raise StoreError(f"store {self.label}: {what} failed: {_cause(exc, self.url)}") from None
                log.info("cluster_db_reconnect", what=what, error=_cause(exc, self.url))
            except psycopg.Error as exc:
                raise StoreError(f"store {self.label}: {what} failed: {_cause(exc, self.url)}") from None
            except Exception as exc:  # PoolTimeout: no connection within the pool's timeout
                raise StoreError(f"store {self.label}: {what} failed: {exc}") from None
        raise AssertionError("unreachable")

    async def one(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> Rows:
        return await self.run(what, [(sql, params)])

    async def tasks(self, ids: list[str]) -> dict[str, Task]:
        if not ids:
            return {}
        rows = await self.one("read tasks", _TASK_SELECT + " WHERE task_id = ANY(?)", (ids,))
        return {t.task_id: t for t in map(_task_from_row, rows)}

    async def events(self, task_id: str, after_seq: int) -> list[TaskEvent]:
        rows = await self.one(
            f"read events of task {task_id}",
            "SELECT task_id, seq, kind, ts_ms, payload FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq",
            (task_id, after_seq),
        )
        return [_event_from_row(*r) for r in rows]

    async def last_seqs(self, ids: list[str]) -> dict[str, int]:
        """The seq of each task's last stored event (tasks without events are left out)."""
        if not ids:
            return {}
        rows = await self.one(
            "read last seqs",
            "SELECT task_id, max(seq) FROM task_events WHERE task_id = ANY(?) GROUP BY task_id",
            (ids,),
        )
        return {str(r[0]): int(r[1]) for r in rows}
