"""Cancels and approval answers for a task another daemon of the cluster holds (issue 19,
docs/scaling.md; part of cluster.Cluster).

A request is a durable row (``cluster_requests``), written in one transaction with a
``NOTIFY orchgpt_requests`` that wakes the daemon holding the task. That daemon applies the
rows of the tasks it holds (those whose claim it has) on the notification, on every tick,
and when its LISTEN connection comes back, and deletes each once applied: a request sent
while the holder is between connections, paused, or dying is applied when it resumes, or
by the daemon that takes its claims over. Applying twice is harmless (a cancelled task
stays cancelled; an approval is applied only while the task's agent is connected here).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import logs
from .errors import RoutingError, StoreError
from .models import ApprovalDecision, ApprovalResponse, Task, now_ms

if TYPE_CHECKING:
    from .mesh import Mesh
    from .store.postgres import PostgresStore

log = logs.get("orchgpt.cluster")

REQUESTS_CHANNEL = "orchgpt_requests"
CANCEL = "cancel"
APPROVE = "approve"


class ClusterRequests:
    if TYPE_CHECKING:  # provided by cluster.Cluster
        store: PostgresStore
        mesh: Mesh
        me: str
        lease_ms: int

        def _write(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
        def _read(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
        def _adopt(self, t: Task) -> None: ...

    # ------------------------------------------------------------ asking (any daemon)
    def approve(self, task_id: str, response: ApprovalResponse) -> bool:
        """An answer to an approval of a task another daemon holds: a request row for it,
        True; False when no other daemon holds the task."""
        rows = self._read(
            "claim",
            "SELECT 1 FROM cluster_claims WHERE task_id = ? AND daemon_id <> '' AND daemon_id <> ?",
            (task_id, self.me),
        )
        if not rows:
            return False
        payload = {
            "request_id": response.request_id,
            "decision": str(response.decision),
            "count": response.count,
            "feedback": response.feedback,
        }
        self._request(task_id, APPROVE, payload)
        log.info("approval_forwarded", task_id=task_id, request_id=response.request_id)
        return True

    def cancel(self, t: Task, reason: str) -> Task:
        """Cancel a task this daemon does not hold: an offered one is claimed here and
        cancelled; for one another daemon holds, a request row that daemon applies (it
        stops its agent). The task as it is now."""
        if t.state.terminal:
            return t
        rows = self._write(
            "claim to cancel",
            "UPDATE cluster_claims SET daemon_id = ?, lease_until_ms = ? WHERE task_id = ? "
            "AND daemon_id = '' RETURNING task_id",
            (self.me, now_ms() + self.lease_ms, t.task_id),
        )
        if rows:
            self._adopt(t)
            return self.mesh.cancel(t.task_id, reason)
        self._request(t.task_id, CANCEL, {"reason": reason})
        log.info("task_cancel_forwarded", task_id=t.task_id)
        return t

    def cancel_children(self, task_id: str, reason: str) -> None:
        """The unfinished sub-tasks of ``task_id`` that other daemons hold (or that wait
        offered) are cancelled with it, as its sub-tasks held here are."""
        try:
            children = self.store.children(task_id)
            for child in children:
                if not child.state.terminal and child.task_id not in self.mesh.queues.active:
                    self.cancel(child, reason)
        except StoreError as exc:
            log.warning("cluster_cancel_children_failed", task_id=task_id, error=str(exc))

    def _request(self, task_id: str, kind: str, payload: dict[str, Any]) -> None:
        with self.store._tx(f"{kind} request") as c:  # the row and its NOTIFY commit together
            c.execute(
                "INSERT INTO cluster_requests (task_id, kind, payload, created_ms) VALUES (?, ?, ?, ?)",
                (task_id, kind, json.dumps(payload), now_ms()),
            )
            c.execute("SELECT pg_notify(?, ?)", (REQUESTS_CHANNEL, task_id))

    # ------------------------------------------------------------ applying (the holder)
    def apply_requests(self, task_id: str = "") -> int:
        """Apply the requests for the tasks this daemon holds (``task_id``: that one only),
        oldest first, deleting each once applied; how many were applied."""
        active = self.mesh.queues.active
        if task_id and task_id not in active:
            return 0
        rows = self._read(
            "requests",
            "SELECT r.id, r.task_id, r.kind, r.payload FROM cluster_requests r JOIN cluster_claims c "
            "ON c.task_id = r.task_id WHERE c.daemon_id = ? AND (? = '' OR r.task_id = ?) ORDER BY r.id",
            (self.me, task_id, task_id),
        )
        rows = [r for r in rows if r[1] in active]
        done: list[int] = []
        for row_id, tid, kind, payload in rows:
            if self._apply(str(tid), str(kind), str(payload)):
                done.append(int(row_id))
        if done:
            self._write("requests applied", "DELETE FROM cluster_requests WHERE id = ANY(?)", (done,))
        return len(done)

    def _apply(self, task_id: str, kind: str, payload: str) -> bool:
        """One request; False to keep it for later (the task's agent is not connected yet)."""
        m = self.mesh
        try:
            ask = json.loads(payload)
            if kind == APPROVE:
                response = ApprovalResponse(
                    str(ask["request_id"]),
                    ApprovalDecision(ask["decision"]),
                    int(ask.get("count", 1)),
                    str(ask.get("feedback", "")),
                )
        except (ValueError, KeyError, TypeError):
            log.warning("cluster_bad_request", task_id=task_id, kind=kind, payload=payload[:200])
            return True  # (dropped: it can never apply)
        t = m.queues.active.get(task_id)
        if t is None or t.state.terminal:
            return True  # finished meanwhile: nothing left to do
        if kind == CANCEL:
            log.info("task_cancel_applied", task_id=task_id)
            m.cancel(task_id, str(ask.get("reason", "")))
            return True
        if kind == APPROVE:
            if not t.agent_id or t.agent_id not in m.registry:
                return False  # its agent is reconnecting: applied when it is back
            try:
                m.approve(task_id, response)
            except RoutingError as exc:
                log.warning("cluster_approval_dropped", task_id=task_id, error=str(exc))
            return True
        log.warning("cluster_unknown_request", task_id=task_id, kind=kind)
        return True

    def drop_finished_requests(self) -> None:
        """Requests for tasks that finished before they were applied are moot."""
        self._write(
            "requests",
            "DELETE FROM cluster_requests r USING tasks t WHERE r.task_id = t.task_id "
            "AND t.state IN ('succeeded', 'failed', 'cancelled')",
        )
