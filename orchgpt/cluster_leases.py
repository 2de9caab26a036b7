"""The cluster's leases (issue 19, docs/scaling.md; part of cluster.Cluster): which daemon
holds a task. A claim is renewed with its daemon's heartbeat; a claim whose lease ran out
(its daemon died) is taken over by a live daemon; an agent that fails over to another
daemon brings the claims of its tasks along (cancels and approvals: cluster_requests.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import logs
from .models import Task, TaskState, now_ms

if TYPE_CHECKING:
    from .cluster_db import ClusterDb
    from .mesh import Mesh
    from .store.postgres import PostgresStore

log = logs.get("orchgpt.cluster")

QUEUE_CHANNEL = "orchgpt_queue"


class ClusterLeases:
    if TYPE_CHECKING:  # provided by cluster.Cluster
        store: PostgresStore
        mesh: Mesh
        me: str
        lease_ms: int

        def _write(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
        def _read(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
        def _local(self, agent_type: str) -> bool: ...

        db: ClusterDb
        _takes: int
        _taken: dict[str, int]

        def _take(self, t: Task, last_seq: int | None = None) -> None: ...
        def _adopt(self, t: Task, last_seq: int | None = None) -> None: ...

    def agent_arrived(self, agent_id: str, task_ids: list[str]) -> None:
        """An agent registers here still running, or with results of, tasks another daemon
        holds (it failed over from there): this daemon takes their claims, whatever their
        lease (the agent is the one that knows where it runs), so that the usual reconnect
        rules (current_task, pending_results) settle them here, once."""
        for task_id in task_ids:
            if not task_id or task_id in self.mesh.queues.active:
                continue
            rows = self._write(
                "take over",
                "UPDATE cluster_claims SET daemon_id = ?, lease_until_ms = ? WHERE task_id = ? "
                "AND daemon_id <> ? RETURNING task_id",
                (self.me, now_ms() + self.lease_ms, task_id, self.me),
            )
            t = self.store.get_task(task_id) if rows else None
            if t is not None and not t.state.terminal:
                log.info("task_taken_over", task_id=task_id, agent_id=agent_id, why="its agent is here")
                self._take(t)

    async def _drop_lost(self) -> None:
        """Tasks in memory whose claim another daemon took (their agent moved there): they
        are that daemon's now, and leave this one's memory without a word."""
        m = self.mesh
        ids = list(m.queues.active)
        if not ids:
            return
        asked = self._takes
        rows = await self.db.one(
            "claims",
            "SELECT task_id FROM cluster_claims WHERE task_id = ANY(?) AND daemon_id <> ?",
            (ids, self.me),
        )
        for (task_id,) in rows:
            t = m.queues.active.get(task_id)
            if t is not None and self._taken.get(task_id, 0) <= asked:  # (not taken back meanwhile)
                log.info("task_moved_away", task_id=task_id, agent_id=t.agent_id or None)
                m.queues.dequeue(t)
                m.queues.forget(task_id)
                m.fanout.seq.pop(task_id, None)

    async def _expire(self, now: int) -> None:
        """Claims of a daemon whose lease ran out (it died): taken over here, the tasks held
        for their agents during the reconnect grace and requeued after it, as after a restart."""
        rows = await self.db.one(
            "expire",
            "UPDATE cluster_claims SET daemon_id = ?, lease_until_ms = ? WHERE task_id IN ("
            "SELECT task_id FROM cluster_claims WHERE daemon_id <> '' AND daemon_id <> ? "
            "AND lease_until_ms < ? ORDER BY lease_until_ms LIMIT 500 FOR UPDATE SKIP LOCKED) "
            "RETURNING task_id",
            (self.me, now + self.lease_ms, self.me, now),
        )
        m = self.mesh
        tasks = await self.db.tasks([str(r[0]) for r in rows])
        for (task_id,) in rows:
            t = tasks.get(task_id)
            if t is None or t.state.terminal or task_id in m.queues.active:
                continue
            log.info(
                "task_taken_over",
                task_id=task_id,
                agent_id=t.agent_id or None,
                why="its daemon's lease expired",
            )
            why = "its orchestrator stopped answering"
            if t.state == TaskState.QUEUED or not t.agent_id:
                if not self._local(t.agent_type):  # offered again, to the daemons with agents
                    await self.db.run(
                        "offer",
                        [
                            (
                                "UPDATE cluster_claims SET daemon_id = '', offered_ms = ? WHERE task_id = ?",
                                (now, task_id),
                            ),
                            ("SELECT pg_notify(?, ?)", (QUEUE_CHANNEL, t.agent_type)),
                        ],
                    )
                    continue
                t.state = TaskState.QUEUED  # (as stored: not a transition)
                self._adopt(t)
                continue
            self._take(t)
            entry = m.registry.get(t.agent_id)
            if entry is not None and task_id not in entry.info.running_tasks:
                m._requeue(t, f"{why}; agent {t.agent_id} is here without it")
            else:  # its agent may still come here (agentd --orchestrator A,B): the grace
                m.queues.hold(task_id, time.monotonic() + m.reconnect_grace, why)
