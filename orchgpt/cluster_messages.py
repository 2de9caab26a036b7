"""Messages for agents connected to another daemon of the cluster (issue 19, docs/scaling.md;
part of cluster.Cluster): a sub-task's result for the agent that delegated it, and
agent-to-agent envelopes (COMMAND, its REPLY, BROADCAST) forwarded to an agent elsewhere.

A message is a durable row of ``cluster_messages`` addressed to an agent id, written in one
transaction with ``NOTIFY orchgpt_messages`` (payload: the agent id). The daemon the agent
is connected to takes (deletes) the rows of its agents on the notification, on every tick,
and when its LISTEN connection comes back, and hands them to the agents' links, oldest
first. An agent that moves to another daemon finds its messages there; rows nobody took in
``message_ttl_ms`` (``--cluster-message-ttl``; the agent is gone for good) are dropped,
logged, and each envelope handed to ``on_expired``: the transport tells its sender (an ERROR
envelope, UNAVAILABLE, naming the agent), wherever the sender is connected now.

Agent-to-agent envelopes are opaque bytes here: the transport (servicer_cluster.py) encodes
them and decodes them on the other side (``on_envelope``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import logs
from .errors import StoreError
from .models import TaskResult, now_ms
from .wire import dicts

if TYPE_CHECKING:
    from .cluster_events import StoreFollowers
    from .mesh import Mesh
    from .store.postgres import PostgresStore

log = logs.get("orchgpt.cluster")

MESSAGES_CHANNEL = "orchgpt_messages"
ENVELOPE = "envelope"  # agent-to-agent traffic, forwarded unchanged
DELEGATION_REPLY = "delegation_reply"  # a sub-task's result for the agent that delegated it
MESSAGE_TTL_MS = 5 * 60_000  # the default: as long as an open COMMAND waits for its REPLY (authz_commands.py)


class ClusterMessages:
    if TYPE_CHECKING:  # provided by cluster.Cluster
        store: PostgresStore
        mesh: Mesh
        me: str
        followers: StoreFollowers

        def _write(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
        def _read(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
        def _alive_since(self) -> int: ...

    # set by the transport: delivers an envelope (bytes) to a connected agent of this daemon
    on_envelope: Callable[[str, bytes], None] | None = None
    # set by the transport: an envelope (bytes) for an agent (id) that never took it: tell its sender
    on_expired: Callable[[str, bytes], None] | None = None
    message_ttl_ms = MESSAGE_TTL_MS  # (the daemon's setting, server.py)

    # ------------------------------------------------------------ where the agents are
    def agent_elsewhere(self, agent_id: str) -> bool:
        """``agent_id`` is connected to another live daemon of the cluster."""
        return bool(
            self._read(
                "agent's daemon",
                "SELECT 1 FROM cluster_agents a JOIN cluster_daemons d ON d.daemon_id = a.daemon_id "
                "WHERE a.agent_id = ? AND a.daemon_id <> ? AND d.heartbeat_ms > ? LIMIT 1",
                (agent_id, self.me, self._alive_since()),
            )
        )

    def pick_remote(self, agent_type: str, key: int, idle_only: bool = False) -> str:
        """An agent of ``agent_type`` on another live daemon (an idle one when there is one;
        ``key`` spreads them), or ""; ``idle_only``: an idle one or ""."""
        rows = self._read(
            "remote agents",
            "SELECT a.agent_id, a.state FROM cluster_agents a JOIN cluster_daemons d "
            "ON d.daemon_id = a.daemon_id WHERE a.agent_type = ? AND a.daemon_id <> ? "
            "AND d.heartbeat_ms > ? ORDER BY a.agent_id",
            (agent_type, self.me, self._alive_since()),
        )
        ids = [str(r[0]) for r in rows if str(r[0]) not in self.mesh.registry]
        idle = [str(r[0]) for r in rows if r[1] == "idle" and str(r[0]) in ids]
        pool = idle or ([] if idle_only else ids)
        return pool[key % len(pool)] if pool else ""

    def remote_agent_ids(self, but: str = "") -> list[str]:
        """The agents connected to the other live daemons (a broadcast's recipients), ``but`` aside."""
        rows = self._read(
            "remote agents",
            "SELECT DISTINCT a.agent_id FROM cluster_agents a JOIN cluster_daemons d "
            "ON d.daemon_id = a.daemon_id WHERE a.daemon_id <> ? AND d.heartbeat_ms > ?",
            (self.me, self._alive_since()),
        )
        reg = self.mesh.registry
        return sorted(str(r[0]) for r in rows if str(r[0]) != but and str(r[0]) not in reg)

    # ------------------------------------------------------------ sending
    def send_envelope(self, agent_ids: list[str], envelope: bytes) -> None:
        """Agent-to-agent traffic for agents of other daemons, forwarded unchanged."""
        self._send(agent_ids, ENVELOPE, base64.b64encode(envelope).decode("ascii"))

    def send_delegation_reply(self, agent_id: str, reply_to: str, result: TaskResult) -> None:
        """A sub-task's result for the agent that delegated it, wherever it is connected now
        (or will be, within MESSAGE_TTL_MS)."""
        payload = json.dumps({"reply_to": reply_to, "result": dicts.result_to_dict(result)})
        self.mesh.flush()  # the sub-task's events are stored before its reply (pgpool: see _deliver)
        self._send([agent_id], DELEGATION_REPLY, payload)
        log.info("delegation_reply_forwarded", task_id=result.task_id, agent_id=agent_id)

    def _send(self, agent_ids: list[str], kind: str, payload: str) -> None:
        if not agent_ids:
            return
        now = now_ms()
        with self.store._tx("messages") as c:  # the rows and their NOTIFYs commit together
            c.executemany(
                "INSERT INTO cluster_messages (agent_id, kind, payload, created_ms) VALUES (?, ?, ?, ?)",
                [(a, kind, payload, now) for a in agent_ids],
            )
            for a in agent_ids:
                c.execute("SELECT pg_notify(?, ?)", (MESSAGES_CHANNEL, a))

    # ------------------------------------------------------------ delivering (the agent's daemon)
    def deliver_messages(self, agent_id: str = "") -> int:
        """Hand the messages for this daemon's agents (``agent_id``: that one) to their links,
        oldest first; each is taken once (deleted as it is taken). How many."""
        reg = self.mesh.registry
        ids = [agent_id] if agent_id else [a.agent_id for a in reg.list()]
        ids = [i for i in ids if i in reg]
        if not ids:
            return 0
        rows = self._write(
            "take messages",
            "DELETE FROM cluster_messages WHERE id IN (SELECT id FROM cluster_messages "
            "WHERE agent_id = ANY(?) ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, agent_id, kind, payload",
            (ids,),
        )
        for _, to, kind, payload in sorted(rows):
            try:
                self._deliver(str(to), str(kind), str(payload))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("cluster_bad_message", agent_id=to, kind=kind, error=str(exc))
        return len(rows)

    def _deliver(self, agent_id: str, kind: str, payload: str) -> None:
        entry = self.mesh.registry.get(agent_id)
        if entry is None:
            return  # (it left within this call)
        if kind == ENVELOPE:
            if self.on_envelope is not None:
                self.on_envelope(agent_id, base64.b64decode(payload))
        elif kind == DELEGATION_REPLY:
            d = json.loads(payload)
            result = dicts.result_from_dict(d["result"])
            self.followers.catch_up(result.task_id)  # its events reach the parent's watchers first
            entry.link.send_reply(str(d["reply_to"]), result)
            log.info("delegation_reply_delivered", task_id=result.task_id, agent_id=agent_id)
        else:
            log.warning("cluster_unknown_message", agent_id=agent_id, kind=kind)

    def drop_stale_messages(self) -> None:
        """The rows nobody took in time, deleted (by one daemon: the DELETE takes each once); each
        envelope's sender told (``on_expired``); a delegation's result has no one to tell."""
        rows = self._write(
            "messages",
            "DELETE FROM cluster_messages WHERE id IN (SELECT id FROM cluster_messages WHERE created_ms < ? "
            "ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id, agent_id, kind, payload",
            (now_ms() - self.message_ttl_ms,),
        )
        if not rows:
            return
        log.warning("cluster_messages_expired", count=len(rows), agent_ids=sorted({str(r[1]) for r in rows})[:20])
        for _, to, kind, payload in sorted(rows):
            if kind == ENVELOPE and self.on_expired is not None:
                try:
                    self.on_expired(str(to), base64.b64decode(payload))
                except (ValueError, StoreError) as exc:
                    log.warning("cluster_bounce_failed", agent_id=to, error=str(exc))
