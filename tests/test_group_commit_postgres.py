"""Group commit in the PostgreSQL store (issue 17, store/pg_group.py), on a real server: writes
share one transaction per window, reads see them at once, other connections only after the
commit, the commit's round trip never holds the event loop, and every answer waits for it."""

from __future__ import annotations

import asyncio

import pytest

from orchgpt import durable
from orchgpt.errors import StoreError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import EventKind, Task, TaskEvent, TaskState
from orchgpt.store import open_store
from orchgpt.wire.batching import Outbox
from tests.test_group_commit import _no_window_left, held  # noqa: F401 (the fixtures: every window held, none left)

pytestmark = pytest.mark.timeout(90)


def _task(i: int) -> Task:
    return Task(task_id=f"t{i}", agent_type="echo", input=f"x{i}", session_id="s")


def _sql(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _committed(url: str) -> dict[str, str]:
    """What another connection (another process after a crash) sees: committed rows only."""
    return dict(_sql(url, "SELECT task_id, state FROM tasks"))  # type: ignore[arg-type]


def _at_commit(url: str, body: str) -> None:
    """Run ``body`` (PL/pgSQL) at the COMMIT of any transaction that inserted a task."""
    _sql(
        url,
        f"CREATE FUNCTION at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$; "
        "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON tasks DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION at_commit()",
    )


@pytest.mark.usefixtures("held")
async def test_writes_share_one_commit_and_reads_see_them_before_it(postgres_url: str) -> None:
    store = open_store(postgres_url, commit_window_ms=400)
    for i in range(3):
        t = _task(i)
        store.create_task(t)
        t.state = TaskState.RUNNING
        store.save_task(t)  # queued for the writer thread
        store.append_events([TaskEvent(t.task_id, EventKind.STATUS, seq=1, text="running")])
    assert durable.barrier() is not None
    got = store.get_task("t1")  # the store's own reads see the window's writes
    assert got is not None and got.state == TaskState.RUNNING and len(store.events("t1")) == 1
    assert _committed(postgres_url) == {}  # not durable yet: nothing may be acknowledged
    await asyncio.wait_for(durable.settle(), 10)
    assert _committed(postgres_url) == {f"t{i}": "running" for i in range(3)}
    g = store.group_commit  # type: ignore[attr-defined]
    assert g is not None and g.transactions == 1 and durable.barrier() is None
    store.close()


async def test_a_slow_commit_does_not_hold_the_loop_and_the_answer_waits_for_it(postgres_url: str) -> None:
    store = open_store(postgres_url, commit_window_ms=2)
    _at_commit(postgres_url, "PERFORM pg_sleep(2)")  # every commit that holds a new task takes 2 s
    out = Outbox()
    store.create_task(_task(1))  # on a store committing each write, the 2 s are spent in this call
    out.put(pb.Envelope(id="ack-of-t1"))  # the answer that depends on it
    answer = asyncio.ensure_future(out.next_batch())
    turns = 0
    while not answer.done():  # the loop goes on while the commit is in flight
        await asyncio.sleep(0.01)
        turns += 1
        if turns == 5:
            assert _committed(postgres_url) == {}  # the commit has not returned yet
    batch = await answer
    assert batch is not None and batch.envelopes[0].id == "ack-of-t1"
    assert _committed(postgres_url) == {"t1": "queued"}  # it left only once t1 was durable
    assert turns >= 5
    store.close()


async def test_concurrent_tasks_share_few_transactions(postgres_url: str) -> None:
    """pg_stat_database's count of committed transactions: the evidence of grouping."""
    db = postgres_url.rsplit("/", 1)[1]

    def xact_commit() -> int:
        return int(_sql(postgres_url, "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,))[0][0])

    store = open_store(postgres_url, commit_window_ms=2)
    n = 40

    async def one(i: int) -> None:  # as the mesh does: each write, then the answer waits
        t = _task(i)
        store.create_task(t)
        await durable.settle()
        for state in (TaskState.ASSIGNED, TaskState.RUNNING):
            t.state = state
            store.save_task(t)
            await asyncio.sleep(0)
        store.append_events([TaskEvent(t.task_id, EventKind.STATUS, seq=1, text="done")])
        t.state = TaskState.SUCCEEDED
        store.save_task(t)
        await durable.settle()

    before = xact_commit()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 60)
    g = store.group_commit  # type: ignore[attr-defined]
    assert g is not None and g.failed_writes == 0
    store.close()
    for _ in range(100):  # the store's backend flushes its statistics as it exits
        if not _sql(
            postgres_url, "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = 'orchgpt'", (db,)
        ):
            break
        await asyncio.sleep(0.05)
    committed = xact_commit() - before
    writes = 5 * n
    assert committed < writes / 4, (committed, writes, g.transactions)  # a commit per write: >= 200
    assert _committed(postgres_url) == {f"t{i}": "succeeded" for i in range(n)}


@pytest.mark.usefixtures("held")
async def test_a_failed_write_is_rolled_back_alone(postgres_url: str) -> None:
    store = open_store(postgres_url, commit_window_ms=300)
    faults: list[str] = []
    store.on_fault = faults.append  # type: ignore[attr-defined]
    store.create_task(_task(1))
    store.append_events([TaskEvent("nope", EventKind.STATUS, seq=1)])  # queued: fails on the writer thread
    store.create_task(_task(2))
    await asyncio.wait_for(durable.settle(), 10)
    assert _committed(postgres_url) == {"t1": "queued", "t2": "queued"}
    assert len(faults) == 1 and "unknown task(s) nope" in faults[0], faults
    store.close()


@pytest.mark.usefixtures("held")
async def test_a_failed_commit_fails_every_waiter_and_nothing_is_sent(postgres_url: str) -> None:
    store = open_store(postgres_url, commit_window_ms=300)
    _at_commit(postgres_url, "RAISE EXCEPTION 'refused at commit'")
    faults: list[str] = []
    store.on_fault = faults.append  # type: ignore[attr-defined]
    out = Outbox()
    store.create_task(_task(1))
    out.put(pb.Envelope(id="ack-of-t1"))
    with pytest.raises(StoreError, match="refused at commit"):
        await asyncio.wait_for(durable.settle(), 10)
    assert await asyncio.wait_for(out.next_batch(), 5) is None  # the answer never leaves
    assert out.error is not None and out.error[0] == "UNAVAILABLE" and "could not commit" in out.error[1]
    assert _committed(postgres_url) == {}
    assert any("refused at commit" in f for f in faults), faults
    store.close()


@pytest.mark.usefixtures("held")
async def test_a_connection_lost_inside_a_window_fails_it(postgres_url: str) -> None:
    store = open_store(postgres_url, commit_window_ms=300)
    store.create_task(_task(1))
    t = _task(1)
    t.state = TaskState.RUNNING
    store.save_task(t)
    db = postgres_url.rsplit("/", 1)[1]
    _sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = 'orchgpt'",
        (db,),
    )
    with pytest.raises(StoreError):
        await asyncio.wait_for(durable.settle(), 10)  # its writes are gone: nothing is acknowledged
    assert _committed(postgres_url) == {}
    store.create_task(_task(2))  # a new connection takes the next window
    await asyncio.wait_for(durable.settle(), 10)
    assert _committed(postgres_url) == {"t2": "queued"}
    store.close()


def test_without_a_loop_every_write_commits_at_once(postgres_url: str) -> None:
    store = open_store(postgres_url, commit_window_ms=50)
    t = _task(1)
    store.create_task(t)
    assert _committed(postgres_url) == {"t1": "queued"}
    t.state = TaskState.RUNNING
    store.save_task(t)
    assert _committed(postgres_url) == {"t1": "running"}
    store.close()


async def test_a_daemon_answers_a_submit_only_once_its_task_is_committed(daemon_factory, postgres_url: str) -> None:  # type: ignore[no-untyped-def]
    """A real daemon on PostgreSQL (group commit on by default), each commit of a new task held
    for 1 s: the Submit's first answer and the result arrive only when the rows are committed."""
    from orchgpt.models import Action, Command

    d = daemon_factory("--store", postgres_url).start()
    async with d.client() as c:
        async for _ in c.submit(Command("echo", Action.RUN, "warm-up")):
            pass
        _at_commit(postgres_url, "PERFORM pg_sleep(1)")
        seen: list[dict[str, str]] = []
        async for ev in c.submit(Command("echo", Action.RUN, "held", task_id="held-1")):
            seen.append(_committed(postgres_url))
            if ev.kind == EventKind.RESULT:
                break
        assert seen and all("held-1" in s for s in seen), seen  # every answer after its commit
        assert seen[-1]["held-1"] == "succeeded", seen  # the result, once it is stored
