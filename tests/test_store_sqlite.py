"""SqliteStore against real SQLite files: round trips, idempotency, crash safety,
events, sessions, migrations and failure reporting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchgpt.errors import StoreError
from orchgpt.models import (
    Action,
    AgentInfo,
    AgentState,
    ApprovalRequest,
    Artifact,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
)
from orchgpt.store import MemoryStore, open_store
from orchgpt.store.base import Store
from orchgpt.store.migrations import LATEST, schema_version
from orchgpt.store.sqlite import SqliteStore
from tests.support import store_fixtures
from tests.support.store_fixtures import full_task

# The shared fixtures (pytest finds a fixture by its name in the test's module).
db, backend, store = store_fixtures.db, store_fixtures.backend, store_fixtures.store

# ---- tasks -------------------------------------------------------------------------


def test_open_store_url_picks_sqlite(db: Path) -> None:
    s = open_store(f"sqlite:{db}")
    try:
        assert isinstance(s, SqliteStore)
        assert db.exists()
        assert s.path == db
    finally:
        s.close()


def test_pragmas_wal_and_foreign_keys(db: Path) -> None:
    store = SqliteStore(db)
    c = sqlite3.connect(db)
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema_version(c) == LATEST
    finally:
        c.close()
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # Recovery at start reads the unfinished tasks through their partial index, not a scan.
    plan = " ".join(
        str(r)
        for r in store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE finished = 0 ORDER BY created_ms"
        )
    )
    assert "tasks_unfinished" in plan
    store.close()


def test_task_round_trip_every_field_across_reopen(backend: str) -> None:
    t = full_task()
    s = open_store(backend)
    stored, created = s.create_task(t)
    assert created and stored == t
    assert s.get_task(t.task_id) == t
    s.close()
    s = open_store(backend)
    try:
        got = s.get_task(t.task_id)
        assert got == t
        assert got is not None and got.action is Action.CREATE and got.state is TaskState.SUCCEEDED
        assert got.result is not None and got.result.usage.cost_usd == 0.0125
        assert s.get_task("missing") is None
    finally:
        s.close()


def test_save_task_persists_state_changes(store: SqliteStore) -> None:
    t = Task(task_id="t1", agent_type="echo", input="hi", session_id="s")
    store.create_task(t)
    t.state, t.agent_id, t.attempts, t.updated_ms = TaskState.RUNNING, "echo-1", 1, t.updated_ms + 5
    store.save_task(t)
    assert store.get_task("t1") == t
    t.state = TaskState.FAILED
    t.error = "agent lost"
    t.result = TaskResult(task_id="t1", state=TaskState.FAILED, error="agent lost")
    store.save_task(t)
    assert store.get_task("t1") == t
    assert store.unfinished_tasks() == []
    t.state = TaskState.QUEUED  # not a legal transition, but the store keeps what it is given
    store.save_task(t)
    assert [u.task_id for u in store.unfinished_tasks()] == ["t1"]
    t.state = TaskState.FAILED
    store.save_task(t)
    assert store.unfinished_tasks() == []
    # Identity columns changed after creation still persist (slow path).
    t.session_id, t.parent_task_id = "other", "p"
    store.save_task(t)
    assert store.get_task("t1") == t
    # save of a task never created stores it.
    u = Task(task_id="t2", agent_type="echo")
    store.save_task(u)
    assert store.get_task("t2") == u


def test_create_task_is_idempotent_on_task_id(backend: str) -> None:
    s = open_store(backend)
    first = Task(task_id="same", agent_type="echo", input="first", session_id="s1")
    _, created = s.create_task(first)
    assert created
    first.state = TaskState.SUCCEEDED
    s.save_task(first)
    again = Task(task_id="same", agent_type="coder", input="second", session_id="s2")
    stored, created = s.create_task(again)
    assert not created
    assert stored.input == "first" and stored.agent_type == "echo"
    assert stored.state is TaskState.SUCCEEDED
    s.close()
    s = open_store(backend)  # also after a restart
    try:
        stored, created = s.create_task(again)
        assert not created and stored.input == "first"
        assert len(s.list_tasks(include_children=True)) == 1
        assert s.get_session("s2") is None  # the duplicate left no trace
    finally:
        s.close()


def test_list_tasks_children_unfinished(store: SqliteStore) -> None:
    for i, (state, parent, sess) in enumerate(
        [
            (TaskState.SUCCEEDED, "", "a"),
            (TaskState.QUEUED, "", "a"),
            (TaskState.RUNNING, "t0", "a"),
            (TaskState.ASSIGNED, "", "b"),
            (TaskState.CANCELLED, "t0", "a"),
            (TaskState.FAILED, "", "b"),
        ]
    ):
        store.create_task(
            Task(
                task_id=f"t{i}",
                agent_type="echo",
                state=state,
                parent_task_id=parent,
                session_id=sess,
                created_ms=1000 + i,
            )
        )
    assert [t.task_id for t in store.list_tasks()] == ["t5", "t3", "t1", "t0"]
    assert [t.task_id for t in store.list_tasks(limit=2)] == ["t5", "t3"]
    assert [t.task_id for t in store.list_tasks(session_id="a")] == ["t1", "t0"]
    assert [t.task_id for t in store.list_tasks(session_id="a", include_children=True)] == ["t4", "t2", "t1", "t0"]
    assert [t.task_id for t in store.children("t0")] == ["t2", "t4"]
    assert [t.task_id for t in store.unfinished_tasks()] == ["t1", "t2", "t3"]


# ---- events --------------------------------------------------------------------------


def test_events_round_trip_order_after_seq_and_replay(store: SqliteStore) -> None:
    store.create_task(Task(task_id="e", agent_type="coder"))
    result = TaskResult(
        task_id="e",
        state=TaskState.SUCCEEDED,
        output="ok",
        usage=Usage(1, 2, 0.3, "m", 1),
        artifacts=[Artifact("a.txt", 1, "ff", "doc")],
    )
    evs = [
        TaskEvent(
            task_id="e",
            kind=EventKind.STATUS,
            seq=1,
            state=TaskState.RUNNING,
            text="running",
            agent_id="c1",
            parent_task_id="p",
            ts_ms=10,
        ),
        TaskEvent(task_id="e", kind=EventKind.TOKEN, seq=2, text="tok", ts_ms=11),
        TaskEvent(
            task_id="e",
            kind=EventKind.ARTIFACT,
            seq=3,
            artifact=Artifact("b.py", 5, "aa", "code"),
            text="b.py",
            ts_ms=12,
        ),
        TaskEvent(task_id="e", kind=EventKind.STEP, seq=4, text="step", data={"tool": "write", "n": "1"}, ts_ms=13),
        TaskEvent(
            task_id="e",
            kind=EventKind.APPROVAL,
            seq=5,
            approval=ApprovalRequest("r1", "shell", '{"cmd": "ls"}', "list files"),
            ts_ms=14,
        ),
        TaskEvent(task_id="e", kind=EventKind.RESULT, seq=6, result=result, ts_ms=15),
    ]
    # stored out of order, in two batches
    store.append_events(evs[3:])
    store.append_events(evs[:3])
    assert store.events("e") == evs
    assert store.events("e", after_seq=4) == evs[4:]
    assert store.events("e", after_seq=1, limit=2) == evs[1:3]
    assert store.events("e", after_seq=6) == []
    assert store.last_seq("e") == 6
    assert store.last_seq("nothing") == 0
    # A replayed event (same task and seq) is not stored twice, and does not overwrite.
    store.append_events([TaskEvent(task_id="e", kind=EventKind.TOKEN, seq=2, text="replayed")])
    assert [e.text for e in store.events("e")].count("tok") == 1
    assert len(store.events("e")) == 6
    # Artifacts are indexed from ARTIFACT events.
    assert store.artifacts("e") == [Artifact("b.py", 5, "aa", "code")]


def test_events_without_seq_get_the_next_seq(store: SqliteStore) -> None:
    store.create_task(Task(task_id="n", agent_type="echo"))
    store.append_events([TaskEvent(task_id="n", kind=EventKind.LOG, seq=3, text="three")])
    batch = [TaskEvent(task_id="n", kind=EventKind.LOG, text=str(i)) for i in range(3)]
    store.append_events(batch)
    assert [e.seq for e in batch] == [4, 5, 6]
    assert [(e.seq, e.text) for e in store.events("n")] == [(3, "three"), (4, "0"), (5, "1"), (6, "2")]


def test_events_of_unknown_task_are_refused_by_name(store: SqliteStore) -> None:
    store.create_task(Task(task_id="known", agent_type="echo"))
    with pytest.raises(StoreError, match=r"unknown task.*ghost"):
        store.append_events(
            [
                TaskEvent(task_id="known", kind=EventKind.LOG, seq=1),
                TaskEvent(task_id="ghost", kind=EventKind.LOG, seq=1),
            ]
        )
    assert store.events("known") == []  # the batch was rolled back as a whole


# ---- sessions ------------------------------------------------------------------------


def _finish(store: Store, t: Task, usage: Usage, end_ms: int) -> None:
    t.state = TaskState.SUCCEEDED
    t.updated_ms = end_ms
    t.result = TaskResult(task_id=t.task_id, state=t.state, output="ok", usage=usage)
    store.save_task(t)


@pytest.mark.parametrize("kind", ["sqlite", "memory", "postgres"])
def test_sessions_summary_and_publish(kind: str, db: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else str(db)
    store: Store = MemoryStore() if kind == "memory" else open_store(url)
    top = Task(
        task_id="a1",
        agent_type="architect",
        action=Action.CREATE,
        input="a blog",
        session_id="S",
        created_ms=100,
        updated_ms=100,
    )
    child = Task(
        task_id="c1",
        agent_type="coder",
        input="code it",
        session_id="S",
        parent_task_id="a1",
        created_ms=150,
        updated_ms=150,
    )
    second = Task(task_id="a2", agent_type="coder", input="tests", session_id="S", created_ms=200, updated_ms=200)
    other = Task(task_id="o1", agent_type="echo", input="x", session_id="O", created_ms=50, updated_ms=50)
    for t in (top, child, second, other):
        store.create_task(t)
    store.append_events(
        [TaskEvent(task_id="a1", kind=EventKind.LOG, seq=i) for i in (1, 2)]
        + [TaskEvent(task_id="c1", kind=EventKind.TOKEN, seq=1)]
    )
    _finish(store, child, Usage(10, 5, 0.01, "small", 1), 300)
    _finish(store, second, Usage(20, 10, 0.02, "small", 2), 400)
    _finish(store, top, Usage(100, 50, 0.5, "big", 1), 500)

    s = store.get_session("S")
    assert s is not None
    assert s.title == "/architect create a blog"
    assert (s.created_ms, s.updated_ms) == (100, 500)
    assert s.task_count == 2 and s.message_count == 3
    assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.calls) == (130, 65, 4)
    assert s.usage.cost_usd == pytest.approx(0.53)
    assert set(s.usage_by_agent) == {"architect", "coder"}
    assert s.usage_by_agent["coder"].prompt_tokens == 30
    assert s.usage_by_agent["coder"].cost_usd == pytest.approx(0.03)
    assert s.usage_by_agent["architect"].model == "big"
    assert not s.published and s.tags == []
    assert [x.session_id for x in store.list_sessions()] == ["S", "O"]
    assert store.list_sessions(published_only=True) == []
    assert store.get_session("nope") is None

    pub = store.publish_session("S", ["demo", "blog"])
    assert pub.published and pub.tags == ["demo", "blog"]
    assert [x.session_id for x in store.list_sessions(published_only=True)] == ["S"]
    with pytest.raises(StoreError, match="'missing'"):
        store.publish_session("missing", [])
    store.close()
    if kind != "memory":  # the gallery survives a restart
        reopened = open_store(url)
        try:
            [g] = reopened.list_sessions(published_only=True)
            assert g.session_id == "S" and g.tags == ["demo", "blog"] and g.task_count == 2
            assert g.usage.prompt_tokens == 130
        finally:
            reopened.close()


# ---- agents, messages, artifacts ---------------------------------------------------------


def test_agents_seen_upsert(store: SqliteStore) -> None:
    a = AgentInfo(
        agent_id="echo-1",
        agent_type="echo",
        capabilities=["echo"],
        host="h1",
        state=AgentState.BUSY,
        current_task="t",
        last_heartbeat_ms=5,
        local=True,
        connected_ms=3,
    )
    store.agent_seen(a)
    a.state, a.current_task, a.last_heartbeat_ms = AgentState.IDLE, "", 9
    store.agent_seen(a)
    store.agent_seen(AgentInfo(agent_id="coder-1", agent_type="coder"))
    seen = store.agents_seen()
    assert len(seen) == 2
    assert next(x for x in seen if x.agent_id == "echo-1") == a


def test_message_log(store: SqliteStore) -> None:
    msgs = [
        {
            "id": "m1",
            "type": "RUN",
            "sender": "orchgpt",
            "recipient": "echo-1",
            "task_id": "t",
            "session_id": "s",
            "ts_ms": 1,
        },
        {
            "id": "m2",
            "type": "REPLY",
            "sender": "echo-1",
            "task_id": "t",
            "session_id": "s",
            "correlation_id": "m1",
            "ts_ms": 2,
        },
    ]
    store.record_messages(msgs)
    store.record_messages(msgs[:1])  # a duplicate id is ignored
    got = store.messages(task_id="t")
    assert [m["id"] for m in got] == ["m1", "m2"]
    assert got[1]["correlation_id"] == "m1" and got[1]["recipient"] == ""
    assert [m["id"] for m in store.messages(session_id="s")] == ["m1", "m2"]
    with pytest.raises(StoreError, match="needs an id"):
        store.record_messages([{"type": "RUN"}])


def test_result_usage_and_artifacts_indexed(store: SqliteStore) -> None:
    t = full_task(state=TaskState.RUNNING, result=None)
    store.create_task(t)
    assert store.artifacts(t.task_id) == []
    store.save_task(full_task())
    assert [a.path for a in store.artifacts(t.task_id)] == ["README.md", "src/app.py"]
    [row] = store._read(  # type: ignore[attr-defined]  (both backends have it)
        "test",
        "SELECT agent_type, prompt_tokens, completion_tokens, cost_usd, model FROM usage WHERE task_id = ?",
        (t.task_id,),
    )
    assert tuple(row) == ("coder", 100, 50, 0.0125, "gpt-x")
