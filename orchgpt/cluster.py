"""Several daemons on one PostgreSQL acting as one mesh (issue 19; design: docs/scaling.md).

On with ``--cluster`` and a PostgreSQL store. Each daemon serves the agents connected to it
and keeps in memory only the tasks it holds a claim on (``cluster_claims``). A task no
agent of this daemon can take is *offered* (a claim row with no daemon) and claimed by a
daemon with an idle agent of its type (``FOR UPDATE SKIP LOCKED``: once), woken by
``NOTIFY orchgpt_queue``. A client of another daemon follows the task's events from the
store by sequence number, woken by ``NOTIFY orchgpt_events`` (sent after each stored
batch), and gets them at once from the events sent live by the daemon running the task
(cluster_live.py). ``cluster_daemons`` holds heartbeats, ``cluster_agents`` every daemon's agents.

The background work (heartbeat, leases, this daemon's agents, claims, expiry, event polls,
live events) runs on an async connection pool (cluster_db.py) and never holds the loop; LISTEN
has an async connection of its own; both reconnect. What the mesh calls inside a request
(``keep``, ``release``, ``follow``, cancel, approve) stays synchronous on the store's
connection, committed before the request is answered, like the mesh's own writes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import logs
from .cluster_all import EVERY, WatchAll
from .cluster_db import ClusterDb
from .cluster_events import ParentRelay, StoreFollowers
from .cluster_leases import QUEUE_CHANNEL, ClusterLeases
from .cluster_live import LiveSender
from .cluster_messages import MESSAGES_CHANNEL, ClusterMessages
from .cluster_requests import REQUESTS_CHANNEL, ClusterRequests
from .errors import StoreError
from .models import AgentInfo, AgentState, Task, TaskState, now_ms

if TYPE_CHECKING:
    from .mesh import Mesh
    from .mesh_fanout import Subscriber
    from .store.postgres import PostgresStore

log = logs.get("orchgpt.cluster")

EVENTS_CHANNEL = "orchgpt_events"
FOLLOW_CHANNEL = "orchgpt_follow"  # a daemon's watcher asks for a task's events live
# events are written (and NOTIFYed) at most this long after they happen: what a watcher on
# another daemon waits at most, bought with more, smaller transactions than one daemon's 50 ms
EVENT_FLUSH_S = 0.005


class Cluster(ClusterRequests, ClusterMessages, ClusterLeases):
    def __init__(self, store: PostgresStore, mesh: Mesh, daemon_id: str, tick_s: float = 0.5) -> None:
        store.commit_each_write()  # the cluster's writes (and their NOTIFYs) commit before they return
        self.store = store
        self.mesh = mesh
        self.me = daemon_id
        self.tick_s = tick_s
        self.dead_after_ms = int((3 * tick_s + 2) * 1000)  # a heartbeat older: the daemon is dead
        self.lease_ms = self.dead_after_ms
        self.started_ms = now_ms()
        self.db = ClusterDb(store.url, str(store.path))  # the cluster's own connections (async, never the loop's)
        self.followers = StoreFollowers(store, self.db.events, self._spawn)  # watchers of tasks other daemons run
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._takes = 0  # tasks taken so far; _taken: when each was
        self._taken: dict[str, int] = {}
        self._listen_conn: Any = None
        # events sent at once to the daemons watching them
        self.live = LiveSender(store.url, lambda task_id: task_id in mesh.queues.active)
        store.events_stored = self.live.stored
        mesh.fanout.flush_delay = EVENT_FLUSH_S
        mesh.fanout.live = self.live.publish
        self.every = WatchAll(mesh, self.live, self.followers, lambda p: self._notify(FOLLOW_CHANNEL, p))
        mesh.cluster = self

    # ------------------------------------------------------------ SQL helpers
    def _write(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.store._tx(what) as c:
            cur = c.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def _read(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.store._read(what, sql, params)

    def _alive_since(self) -> int:
        return now_ms() - self.dead_after_ms

    # ------------------------------------------------------------ called by the mesh (sync)
    def mine(self, task_id: str) -> bool:
        """This daemon holds the task's claim (recovery loads only these)."""
        rows = self._read("claim", "SELECT daemon_id FROM cluster_claims WHERE task_id = ?", (task_id,))
        return bool(rows) and rows[0][0] == self.me

    def remote_types(self) -> set[str]:
        """The agent types of the other live daemons' agents."""
        rows = self._read(
            "remote types",
            "SELECT DISTINCT a.agent_type FROM cluster_agents a JOIN cluster_daemons d "
            "ON d.daemon_id = a.daemon_id WHERE a.daemon_id <> ? AND d.heartbeat_ms > ?",
            (self.me, self._alive_since()),
        )
        return {str(r[0]) for r in rows}

    def has_remote(self, agent_type: str) -> bool:
        """Another live daemon has an agent of ``agent_type``."""
        return bool(
            self._read(
                "remote agents",
                "SELECT 1 FROM cluster_agents a JOIN cluster_daemons d ON d.daemon_id = a.daemon_id "
                "WHERE a.agent_type = ? AND a.daemon_id <> ? AND d.heartbeat_ms > ? LIMIT 1",
                (agent_type, self.me, self._alive_since()),
            )
        )

    def keep(self, t: Task) -> bool:
        """A task submitted here: claim it (True) when this daemon can run it (an agent of its
        type, or it may spawn one) or no other daemon can; else False (``release`` it)."""
        if not self._local(t.agent_type) and self.has_remote(t.agent_type):
            return False
        self._write(
            "claim",
            "INSERT INTO cluster_claims (task_id, daemon_id, agent_type, "
            "lease_until_ms) VALUES (?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
            (t.task_id, self.me, t.agent_type, now_ms() + self.lease_ms),
        )
        return True

    def _local(self, agent_type: str) -> bool:
        """This daemon has an agent of ``agent_type``, or may spawn one."""
        m = self.mesh
        sp = m.spawner
        return m.registry.has_type(agent_type) or bool(sp and (sp.can_spawn(agent_type) or sp.starting(agent_type)))

    def release(self, t: Task) -> None:
        """Offer a task to the other daemons: it leaves this one's memory (its first events
        written first, so that the claimer numbers on after them)."""
        m = self.mesh
        m.queues.forget(t.task_id)
        last = m.fanout.seq.pop(t.task_id, None)
        m.flush()
        if t.parent_task_id in m.queues.active:  # its parent's watchers here see its events, followed from
            # the last one numbered here, before the offer is visible: the claimer may store more (even
            # finish) before this daemon's next statement (a pause under load lost them, the relay flake)
            self.followers.follow(t.task_id, ParentRelay(m, t.parent_task_id), last or self.store.last_seq(t.task_id))
        with self.store._tx("offer") as c:  # one commit; the NOTIFY goes out with it
            c.execute(
                "INSERT INTO cluster_claims (task_id, daemon_id, agent_type, offered_ms) "
                "VALUES (?, '', ?, ?) ON CONFLICT (task_id) DO UPDATE SET daemon_id = '', "
                "offered_ms = excluded.offered_ms",
                (t.task_id, t.agent_type, now_ms()),
            )
            c.execute("SELECT pg_notify(?, ?)", (QUEUE_CHANNEL, t.agent_type))
        log.info("task_offered", task_id=t.task_id, agent_type=t.agent_type)

    def follow(self, task_id: str, sub: Subscriber, after_seq: int) -> bool:
        """Deliver to ``sub`` the events after ``after_seq`` of a task another daemon runs
        (cluster_events.py); False when it is finished or unknown. The daemon running it is
        asked to send its events live (NOTIFY orchgpt_follow)."""
        if task_id not in self.followers:
            self._spawn(self._notify(FOLLOW_CHANNEL, task_id))
        return self.followers.follow(task_id, sub, after_seq)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background (a StoreError is logged: the next tick tries again)."""
        t = asyncio.get_running_loop().create_task(self._logged(coro))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _logged(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except StoreError as exc:
            log.warning("cluster_background_failed", error=str(exc))

    async def _notify(self, channel: str, payload: str) -> None:
        await self.db.one("notify", "SELECT pg_notify(?, ?)", (channel, payload))

    def unfollow(self, sub: Subscriber, task_id: str) -> None:
        self.followers.unfollow(sub, task_id)

    def wake(self) -> None:
        """An agent here became idle: claim offered work now rather than at the next tick."""
        self._wake.set()

    def remote_agents(self, agent_type: str = "") -> list[AgentInfo]:
        """The agents of the other daemons, each with its ``daemon``; those of a daemon that
        stopped answering are LOST."""
        rows = self._read(
            "remote agents",
            "SELECT a.agent_id, a.agent_type, a.state, a.current_task, a.host, a.daemon_id, "
            "coalesce(d.heartbeat_ms, 0), a.updated_ms FROM cluster_agents a "
            "LEFT JOIN cluster_daemons d ON d.daemon_id = a.daemon_id "
            "WHERE a.daemon_id <> ? AND (? = '' OR a.agent_type = ?) ORDER BY a.updated_ms",
            (self.me, agent_type, agent_type),
        )
        alive = self._alive_since()
        out: dict[str, AgentInfo] = {}
        for agent_id, typ, state, current, host, daemon, beat, _updated in rows:
            if agent_id in self.mesh.registry:
                continue  # connected here now
            live = int(beat) > alive
            info = AgentInfo(
                agent_id=agent_id,
                agent_type=typ,
                host=host,
                state=AgentState(state) if live else AgentState.LOST,
                current_task=current,
                running_tasks=[current] if current else [],  # (the table keeps one: slots are not shared)
                last_heartbeat_ms=int(beat),
                daemon=daemon,
            )
            prev = out.get(agent_id)
            if prev is None or live or prev.state == AgentState.LOST:
                out[agent_id] = info  # the live daemon's row wins over a dead one's
        return sorted(out.values(), key=lambda a: (a.agent_type, a.agent_id))

    # ------------------------------------------------------------ the loop
    async def start(self) -> None:
        await self.db.open()
        await self.tick()
        self._tasks = [
            asyncio.create_task(self._ticker()),
            asyncio.create_task(self._listen()),
            asyncio.create_task(self.live.run()),
        ]
        log.info("cluster_joined", daemon_id=self.me)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:  # (bounded: a stop must not hang on a connection)
            await asyncio.wait(self._tasks, timeout=3)
        if self._listen_conn is not None:
            try:
                await asyncio.wait_for(self._listen_conn.close(), 3)
            except Exception as exc:  # closing a broken connection: nothing left to do
                log.debug("cluster_listen_close_failed", error=str(exc))
        try:
            await asyncio.wait_for(self.live.close(), 3)
            await asyncio.wait_for(self.db.close(), 3)
        except Exception as exc:
            log.debug("cluster_pool_close_failed", error=str(exc))
        try:  # a clean leave: the others list our agents no more, take our tasks at once
            self._write(
                "leave",
                "UPDATE cluster_claims SET lease_until_ms = 0 WHERE daemon_id = ?",
                (self.me,),
            )
            self._write("leave", "DELETE FROM cluster_agents WHERE daemon_id = ?", (self.me,))
            self._write("leave", "DELETE FROM cluster_daemons WHERE daemon_id = ?", (self.me,))
        except StoreError as exc:
            log.warning("cluster_leave_failed", error=str(exc))

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_s
        while True:
            woken = True
            try:
                await asyncio.wait_for(self._wake.wait(), max(next_tick - loop.time(), 0))
            except TimeoutError:
                woken = False
            self._wake.clear()
            try:
                if woken:  # offered work or an idle agent: only the claim, at once
                    await self._claim()
                    continue
                next_tick = loop.time() + self.tick_s
                await self.tick()
            except StoreError as exc:
                log.warning("cluster_tick_failed", error=str(exc))
            except Exception as exc:  # a bug must not stop the cluster loop
                log.exception("cluster_tick_error", error=str(exc))

    async def _listen(self) -> None:
        import psycopg

        delay = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.store.url, autocommit=True, application_name=f"orchgpt-listen {self.me}"[:63]
                )
                self._listen_conn = conn
                await conn.execute(f"LISTEN {QUEUE_CHANNEL}")
                await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                await conn.execute(f"LISTEN {REQUESTS_CHANNEL}")
                await conn.execute(f"LISTEN {MESSAGES_CHANNEL}")
                await conn.execute(f"LISTEN {FOLLOW_CHANNEL}")
                delay = 0.2
                self._safely(self.apply_requests)  # those sent while we were not listening
                self._safely(self.deliver_messages)
                while True:  # (a timeout now and then: cancellation is seen at once)
                    async for n in conn.notifies(timeout=1.0):
                        if n.channel == QUEUE_CHANNEL:
                            self._wake.set()
                        elif n.channel == REQUESTS_CHANNEL:
                            self._safely(functools.partial(self.apply_requests, n.payload))
                        elif n.channel == MESSAGES_CHANNEL:
                            if n.payload in self.mesh.registry:
                                self._safely(functools.partial(self.deliver_messages, n.payload))
                        elif n.channel == FOLLOW_CHANNEL:
                            if n.payload in self.mesh.queues.active:
                                self.live.want(n.payload)
                            elif n.payload == EVERY:
                                self.every.asked()
                        elif n.payload.startswith("{"):  # events sent live (cluster_live.py)
                            self.every.on_live(n.payload, n.pid)
                        elif n.channel == EVENTS_CHANNEL:  # a batch stored ("TASK_ID SEQ")
                            self.followers.stored(n.payload)
            except psycopg.Error as exc:
                log.warning(
                    "cluster_listen_lost",
                    error=str(exc).splitlines()[0] if str(exc) else "",
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _safely(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except StoreError as exc:
            log.warning("cluster_poll_failed", error=str(exc))

    async def tick(self) -> None:
        """Heartbeat and lease renewal, this daemon's agents, claims, followed tasks."""
        now = now_ms()
        await self.db.one(
            "heartbeat",
            "INSERT INTO cluster_daemons (daemon_id, pid, host, started_ms, heartbeat_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (daemon_id) DO UPDATE SET pid = excluded.pid, "
            "host = excluded.host, heartbeat_ms = excluded.heartbeat_ms",
            (self.me, os.getpid(), socket.gethostname(), self.started_ms, now),
        )
        await self.db.one(
            "leases",
            "UPDATE cluster_claims SET lease_until_ms = ? WHERE daemon_id = ?",
            (now + self.lease_ms, self.me),
        )
        await self.db.one(  # the claims of finished tasks have done their work
            "claims",
            "DELETE FROM cluster_claims c USING tasks t WHERE c.task_id = t.task_id "
            "AND c.daemon_id = ? AND t.state IN ('succeeded', 'failed', 'cancelled')",
            (self.me,),
        )
        await self._sync_agents(now)
        await self._drop_lost()
        await self._expire(now)
        await self._claim()
        self.apply_requests()  # cancels and approvals from the other daemons (cluster_requests.py)
        self.drop_finished_requests()
        self.deliver_messages()  # for this daemon's agents, from the others (cluster_messages.py)
        self.drop_stale_messages()
        await self.followers.poll_all()
        self.every.tick()  # every-task watchers here: ask the others again (cluster_all.py)

    async def _sync_agents(self, now: int) -> None:
        agents = self.mesh.registry.list()
        await self.db.run(
            "agents",
            [
                ("DELETE FROM cluster_agents WHERE daemon_id = ?", (self.me,)),
                (
                    "INSERT INTO cluster_agents (agent_id, daemon_id, agent_type, state, "
                    "current_task, host, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    tuple(
                        (
                            a.agent_id,
                            self.me,
                            a.agent_type,
                            str(a.state),
                            a.current_task,
                            a.host,
                            now,
                        )
                        for a in agents
                    ),
                ),
            ],
            many=True,
        )

    async def _claim(self) -> None:
        """Take offered tasks for this daemon's idle agents, as many as they are."""
        m = self.mesh
        if m._closing:
            return  # stopping: the other daemons take the work
        for agent_type in list(m.registry.idle):
            want = m.registry.free_slots(agent_type) - len(m.queues.queued(agent_type))  # (agents with slots)
            if want <= 0:
                continue
            rows = await self.db.one(
                "claim",
                "UPDATE cluster_claims SET daemon_id = ?, lease_until_ms = ? WHERE daemon_id = '' "
                "AND task_id IN (SELECT c.task_id FROM cluster_claims c JOIN tasks t "
                "ON t.task_id = c.task_id WHERE c.daemon_id = '' AND c.agent_type = ? "
                "AND t.state = 'queued' ORDER BY c.offered_ms LIMIT ? FOR UPDATE OF c SKIP LOCKED) "
                "RETURNING task_id",
                (self.me, now_ms() + self.lease_ms, agent_type, want),
            )
            ids = [str(r[0]) for r in rows]
            tasks, seqs = await self.db.tasks(ids), await self.db.last_seqs(ids)
            for task_id in ids:  # (the loop went on meanwhile: _adopt checks what it holds)
                t = tasks.get(task_id)
                if t is not None and t.state == TaskState.QUEUED:
                    self._adopt(t, seqs.get(task_id, 0))

    def _take(self, t: Task, last_seq: int | None = None) -> None:
        """A task taken over in the state it was stored in (assigned or running on an agent);
        its events are sent live (its submitter may watch it on another daemon)."""
        m = self.mesh
        self.live.want(t.task_id)
        self._takes += 1
        self._taken[t.task_id] = self._takes  # (_drop_lost: a claim read before this is stale)
        if len(self._taken) > 10_000:
            self._taken.clear()
        self._to_live(t)
        m.queues.active[t.task_id] = t
        m.fanout.start(t.task_id, self.store.last_seq(t.task_id) if last_seq is None else last_seq)

    def _to_live(self, t: Task) -> None:
        """Watchers that followed the task through the store follow it live from now on."""
        for sub in self.followers.hand_over(t.task_id):
            self.mesh.fanout.subscribe(sub, t.task_id)

    def _adopt(self, t: Task, last_seq: int | None = None) -> None:
        """A claimed task joins this daemon's memory as if submitted here."""
        m = self.mesh
        if t.task_id in m.queues.active:
            return
        log.info("task_claimed", task_id=t.task_id, agent_type=t.agent_type)
        self._take(t, last_seq)
        m.queues.enqueue(t)
        m._dispatch(t.agent_type)


def refuse_without_postgres(store: object) -> None:
    """--cluster needs the PostgreSQL store: ConfigError otherwise."""
    from .errors import ConfigError
    from .store.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        raise ConfigError(
            "--cluster needs a PostgreSQL store (--store postgresql://USER@HOST:PORT/DB): "
            "several daemons share their tasks through it"
        )
