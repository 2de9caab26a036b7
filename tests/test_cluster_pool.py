"""The cluster's background work on its async pool (issue 19, orchgpt/cluster_db.py): a
heartbeat held up by a lock in PostgreSQL does not hold the daemon's event loop, and a
cluster whose every connection an administrator terminated (``pg_terminate_backend``)
goes on routing tasks across daemons.

Real daemons (``--cluster``) on a real PostgreSQL server, a real agentd.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(60)


def cluster(daemon_factory, postgres_url: str, tmp_path: Path, n: int) -> list[Daemon]:  # type: ignore[no-untyped-def]
    return [
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(n)
    ]


async def listed(d: Daemon) -> bool:
    async with d.client() as c:
        return bool(await asyncio.wait_for(c.list_agents(), 10))


async def echo(d: Daemon, text: str) -> str:
    async with d.client(timeout=30) as c:
        async for ev in c.submit(Command("echo", input=text)):
            if ev.kind == EventKind.RESULT and ev.result is not None:
                return f"{ev.result.state}:{ev.result.output}"
    return "no result"


async def test_a_locked_heartbeat_row_does_not_hold_the_daemon(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    (a,) = cluster(daemon_factory, postgres_url, tmp_path, 1)
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: listed(a), timeout=20, what="the agent on the daemon")
    async with await psycopg.AsyncConnection.connect(postgres_url) as lock:  # a transaction left open
        rows = await (
            await lock.execute(
                "SELECT daemon_id FROM cluster_daemons WHERE daemon_id = %s FOR NO KEY UPDATE", (a.address,)
            )
        ).fetchall()
        assert rows, "the daemon has no heartbeat row"
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'orchgpt%%'"
        )

        async def blocked() -> bool:
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as c:
                return bool((await (await c.execute(waiting)).fetchone() or (0,))[0])

        await await_for(blocked, timeout=10, what="the daemon's heartbeat waiting for the row lock")
        t0 = time.monotonic()
        # the daemon answers and runs a task while its heartbeat waits
        assert await asyncio.wait_for(echo(a, "while locked"), 8) == "succeeded:while locked"
        assert await asyncio.wait_for(listed(a), 5)
        assert await blocked(), "the lock was let go too early: the test shows nothing"
        assert time.monotonic() - t0 < 8
        await lock.rollback()
    assert await asyncio.wait_for(echo(a, "after"), 10) == "succeeded:after"


async def test_the_cluster_routes_again_after_its_connections_are_terminated(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    a, b = cluster(daemon_factory, postgres_url, tmp_path, 2)
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: listed(b), timeout=20, what="the agent listed on the second daemon")
    assert await echo(b, "before") == "succeeded:before"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'orchgpt%%' AND pid <> pg_backend_pid()"
        )
        killed = len(await cur.fetchall())
    assert killed >= 4, killed  # each daemon: its store and its LISTEN (and its pool)
    # at once, then again: each daemon's store, pool and LISTEN connections are new ones
    assert await asyncio.wait_for(echo(b, "right after"), 20) == "succeeded:right after"
    for i in range(3):
        assert await asyncio.wait_for(echo(b, f"then {i}"), 20) == f"succeeded:then {i}"
    await await_for(
        lambda: "cluster_listen_lost" in a.log() and "cluster_listen_lost" in b.log(),
        timeout=10,
        what="both daemons saw their LISTEN connection go",
    )
