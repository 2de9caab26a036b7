"""Token deltas cross daemons live (issue 19, orchgpt/cluster_live.py): a watcher on daemon B
of a task whose agent is on daemon A gets each event as it happens, before the batch that
stores it is written, and still every event once, in order, with no gap (an event too large
to send live comes from the store, the ones after it wait for it).

Real daemons (``--cluster``) on a real PostgreSQL server, a real agentd.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchgpt.models import Command, EventKind, TaskEvent
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(60)


def two(daemon_factory, postgres_url: str, tmp_path: Path) -> list[Daemon]:  # type: ignore[no-untyped-def]
    return [
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(2)
    ]


async def listed(d: Daemon) -> bool:
    async with d.client() as c:
        return bool(await asyncio.wait_for(c.list_agents(), 10))


class Watcher:
    """Checks the per-task contract on what a client gets, and counts the token events that
    reached it before the store held them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[TaskEvent] = []
        self.early = 0
        self.conn: object = None

    async def take(self, ev: TaskEvent) -> None:
        import psycopg

        if self.conn is None:
            self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        if ev.kind == EventKind.TOKEN:
            cur = await self.conn.execute(  # type: ignore[attr-defined]
                "SELECT coalesce(max(seq), 0) FROM task_events WHERE task_id = %s", (ev.task_id,)
            )
            row = await cur.fetchone()
            self.early += int(row[0]) < ev.seq
        self.events.append(ev)

    def check(self) -> str:
        """The tokens' text, after checking: seq 1, 2, 3... (a coalesced event stands for its
        range), each once, ending with the RESULT."""
        prev = 0
        for ev in self.events:
            first = int(ev.data.get("seq_from", ev.seq))
            assert first == prev + 1 and ev.seq >= first, [(e.seq, e.data.get("seq_from")) for e in self.events]
            prev = ev.seq
        assert self.events[-1].kind == EventKind.RESULT and self.events[-1].result is not None
        assert self.events[-1].result.ok, self.events[-1].result
        return "".join(e.text for e in self.events if e.kind == EventKind.TOKEN)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()  # type: ignore[attr-defined]


async def test_tokens_reach_the_other_daemons_watcher_before_they_are_stored_in_order(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: listed(b), timeout=20, what="the agent listed on the second daemon")
    words = [f"w{i}" for i in range(30)]
    words[12] = "x" * 9000  # over NOTIFY's payload limit: only stored; the next ones wait for it
    w = Watcher(postgres_url)
    try:
        async with b.client(timeout=40) as c:
            cmd = Command("echo", input=" ".join(words), options={"tokens": "1", "token_gap": "0.03"})
            async for ev in c.submit(cmd):
                await w.take(ev)
    finally:
        await w.close()
    assert w.check() == "".join(f"{x} " for x in words)
    assert w.early > 0, "no token reached the watcher on the other daemon before it was stored"


async def test_a_watcher_on_another_daemon_asks_for_the_events_live(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two(daemon_factory, postgres_url, tmp_path)
    agents.append(start_agent(a, "echo-a"))
    await await_for(lambda: listed(a), timeout=20, what="the agent on the first daemon")
    words = [f"v{i}" for i in range(40)]
    started = asyncio.Event()

    async def submit() -> None:  # on A, where its agent is: A runs it, nothing offered
        async with a.client(timeout=40) as c:
            cmd = Command("echo", input=" ".join(words), task_id="live-w", options={"tokens": "1", "token_gap": "0.05"})
            async for ev in c.submit(cmd):
                if ev.kind == EventKind.TOKEN:
                    started.set()

    running = asyncio.create_task(submit())
    await asyncio.wait_for(started.wait(), 20)
    w = Watcher(postgres_url)
    try:
        async with b.client(timeout=40) as c:
            async for ev in c.watch("live-w"):
                await w.take(ev)
    finally:
        await w.close()
    await asyncio.wait_for(running, 20)
    assert w.check() == "".join(f"{x} " for x in words)
    assert w.early > 0, "no token reached the watcher on the other daemon before it was stored"


async def test_a_fast_tasks_deltas_cross_folded_into_few_notifications(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    """300 deltas with no gap, the agent's own folding off: the events cross in fewer NOTIFY
    payloads (a task's events folded), not one each, and the watcher still gets every delta
    once, in order."""
    import psycopg

    from orchgpt.cluster_live import decode

    a, b = two(daemon_factory, postgres_url, tmp_path)
    # the agent's own folding off (orchgpt.wire.token_fold): a delta an event, as from a non-folding agent
    agents.append(start_agent(a, "echo-a", extra_env={"ORCHGPT_TOKEN_LINGER_MS": "0"}))
    await await_for(lambda: listed(b), timeout=20, what="the agent listed on the second daemon")
    words = [f"f{i}" for i in range(300)]
    notes: list[str] = []
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("LISTEN orchgpt_events")

        async def listen() -> None:
            async for n in conn.notifies():
                if n.payload.startswith("{"):
                    notes.append(n.payload)

        listening = asyncio.create_task(listen())
        w = Watcher(postgres_url)
        try:
            async with b.client(timeout=40) as c:
                opts = {"tokens": "1", "token_gap": "0.0002"}
                async for ev in c.submit(Command("echo", input=" ".join(words), options=opts)):
                    w.events.append(ev)
            await asyncio.sleep(0.2)  # the last notifications reach the listener
        finally:
            listening.cancel()
    assert w.check() == "".join(f"{x} " for x in words)
    carried = sum(len(x) if isinstance(x, list) else 1 for x in map(decode, notes))  # (one each before)
    assert carried >= 30, f"only {carried} events crossed live in {len(notes)} notifications"
    assert len(notes) * 3 < carried * 2, f"{carried} events in {len(notes)} notifications: not folded"
