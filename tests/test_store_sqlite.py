"""SqliteStore against real SQLite files: round trips, idempotency, crash safety,
events, sessions, migrations and failure reporting."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
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
from orchgpt.store.migrations import LATEST, MIGRATIONS, migrate, schema_version
from orchgpt.store.sqlite import SqliteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "orchgpt.db"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db: Path) -> str:
    """The store URL of each backend the shared contract runs on (issue 19): a SQLite file,
    a fresh database on a real PostgreSQL server (tests/support/postgres.py)."""
    return str(db) if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def store(backend: str):
    s = open_store(backend)
    yield s
    s.close()


def full_task(task_id: str = "t-full", **kw) -> Task:
    """A task with every field set to something other than its default."""
    result = TaskResult(
        task_id=task_id, state=TaskState.SUCCEEDED, output="done ✓", error="",
        artifacts=[Artifact("src/app.py", 120, "ab" * 32, "code"), Artifact("README.md", 9, "cd" * 32, "document")],
        usage=Usage(prompt_tokens=100, completion_tokens=50, cost_usd=0.0125, model="gpt-x", calls=3),
        workspace="/ws/t-full", agent_type="coder", agent_id="coder-1", data={"tests": "3 passed"},
    )
    dep = TaskResult(task_id="dep-1", state=TaskState.FAILED, error="no", agent_type="architect",
                     usage=Usage(1, 2, 0.5, "m", 1), artifacts=[Artifact("plan.md", 1, "ef", "document")])
    fields = dict(
        task_id=task_id, agent_type="coder", action=Action.CREATE, input='make "an app"\nnow',
        language="rust", session_id="sess-1", parent_task_id="", approval=True,
        options={"delay": "0.5", "model": "x"}, state=TaskState.SUCCEEDED, agent_id="coder-1",
        attempts=2, created_ms=1_000, updated_ms=2_000, result=result, error="first try failed",
        submitted_by="alice", delegated_by="manager-7", inputs=[dep], reply_to="corr-9",
    )
    fields.update(kw)
    return Task(**fields)  # type: ignore[arg-type]


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
    plan = " ".join(str(r) for r in store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE finished = 0 ORDER BY created_ms"))
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
    for i, (state, parent, sess) in enumerate([
        (TaskState.SUCCEEDED, "", "a"), (TaskState.QUEUED, "", "a"), (TaskState.RUNNING, "t0", "a"),
        (TaskState.ASSIGNED, "", "b"), (TaskState.CANCELLED, "t0", "a"), (TaskState.FAILED, "", "b"),
    ]):
        store.create_task(Task(task_id=f"t{i}", agent_type="echo", state=state, parent_task_id=parent,
                               session_id=sess, created_ms=1000 + i))
    assert [t.task_id for t in store.list_tasks()] == ["t5", "t3", "t1", "t0"]
    assert [t.task_id for t in store.list_tasks(limit=2)] == ["t5", "t3"]
    assert [t.task_id for t in store.list_tasks(session_id="a")] == ["t1", "t0"]
    assert [t.task_id for t in store.list_tasks(session_id="a", include_children=True)] == ["t4", "t2", "t1", "t0"]
    assert [t.task_id for t in store.children("t0")] == ["t2", "t4"]
    assert [t.task_id for t in store.unfinished_tasks()] == ["t1", "t2", "t3"]


# ---- crash safety --------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from orchgpt.models import Task, TaskState, TaskEvent, EventKind, TaskResult
    from orchgpt.store.sqlite import SqliteStore
    s = SqliteStore(sys.argv[1])
    states = [TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING, TaskState.SUCCEEDED]
    for i in range(40):
        t = Task(task_id=f"k{i:02d}", agent_type="echo", input=str(i), session_id="crash",
                 created_ms=1000 + i)
        s.create_task(t)
        t.state = states[i % 4]
        if t.state.terminal:
            t.result = TaskResult(task_id=t.task_id, state=t.state, output=str(i))
        s.save_task(t)
        s.append_events([TaskEvent(task_id=t.task_id, kind=EventKind.LOG, seq=j, text=f"{i}.{j}")
                         for j in range(1, 6)])
    # A write in flight when the process dies: never committed.
    s._conn.execute("BEGIN IMMEDIATE")
    s._conn.execute("UPDATE tasks SET state = 'succeeded' WHERE task_id = 'k00'")
    print("committed", flush=True)
    time.sleep(60)
    """
)


def test_committed_writes_survive_sigkill(db: Path, tmp_path: Path) -> None:
    db.parent.mkdir(parents=True)
    errlog = tmp_path / "writer.err"
    with errlog.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE,
                                stderr=err, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while line != "committed":  # skip log lines
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"writer did not report within 60 s: {errlog.read_text()}"
            raw = proc.stdout.readline()
            assert raw, f"writer exited early: {errlog.read_text()}"
            line = raw.strip()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert Path(str(db) + "-wal").exists()  # the commits live in the WAL, not yet checkpointed
    s = SqliteStore(db)
    try:
        tasks = s.list_tasks(limit=1000)
        assert len(tasks) == 40
        unfinished = s.unfinished_tasks()
        assert [t.task_id for t in unfinished] == [f"k{i:02d}" for i in range(40) if i % 4 != 3]
        assert s.get_task("k00") is not None and s.get_task("k00").state is TaskState.QUEUED  # type: ignore[union-attr]
        done = s.get_task("k03")
        assert done is not None and done.result is not None and done.result.output == "3"
        assert [e.text for e in s.events("k39")] == [f"39.{j}" for j in range(1, 6)]
        # The store is writable again: the dead writer's lock is gone.
        t = unfinished[0]
        t.state = TaskState.FAILED
        t.error = "orchestrator restarted"
        s.save_task(t)
        assert s.get_task(t.task_id).state is TaskState.FAILED  # type: ignore[union-attr]
    finally:
        s.close()


# ---- events --------------------------------------------------------------------------


def test_events_round_trip_order_after_seq_and_replay(store: SqliteStore) -> None:
    store.create_task(Task(task_id="e", agent_type="coder"))
    result = TaskResult(task_id="e", state=TaskState.SUCCEEDED, output="ok",
                        usage=Usage(1, 2, 0.3, "m", 1), artifacts=[Artifact("a.txt", 1, "ff", "doc")])
    evs = [
        TaskEvent(task_id="e", kind=EventKind.STATUS, seq=1, state=TaskState.RUNNING, text="running",
                  agent_id="c1", parent_task_id="p", ts_ms=10),
        TaskEvent(task_id="e", kind=EventKind.TOKEN, seq=2, text="tok", ts_ms=11),
        TaskEvent(task_id="e", kind=EventKind.ARTIFACT, seq=3, artifact=Artifact("b.py", 5, "aa", "code"),
                  text="b.py", ts_ms=12),
        TaskEvent(task_id="e", kind=EventKind.STEP, seq=4, text="step", data={"tool": "write", "n": "1"}, ts_ms=13),
        TaskEvent(task_id="e", kind=EventKind.APPROVAL, seq=5,
                  approval=ApprovalRequest("r1", "shell", '{"cmd": "ls"}', "list files"), ts_ms=14),
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
        store.append_events([
            TaskEvent(task_id="known", kind=EventKind.LOG, seq=1),
            TaskEvent(task_id="ghost", kind=EventKind.LOG, seq=1),
        ])
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
    top = Task(task_id="a1", agent_type="architect", action=Action.CREATE, input="a blog",
               session_id="S", created_ms=100, updated_ms=100)
    child = Task(task_id="c1", agent_type="coder", input="code it", session_id="S",
                 parent_task_id="a1", created_ms=150, updated_ms=150)
    second = Task(task_id="a2", agent_type="coder", input="tests", session_id="S",
                  created_ms=200, updated_ms=200)
    other = Task(task_id="o1", agent_type="echo", input="x", session_id="O", created_ms=50, updated_ms=50)
    for t in (top, child, second, other):
        store.create_task(t)
    store.append_events([TaskEvent(task_id="a1", kind=EventKind.LOG, seq=i) for i in (1, 2)]
                        + [TaskEvent(task_id="c1", kind=EventKind.TOKEN, seq=1)])
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
    a = AgentInfo(agent_id="echo-1", agent_type="echo", capabilities=["echo"], host="h1",
                  state=AgentState.BUSY, current_task="t", last_heartbeat_ms=5, local=True, connected_ms=3)
    store.agent_seen(a)
    a.state, a.current_task, a.last_heartbeat_ms = AgentState.IDLE, "", 9
    store.agent_seen(a)
    store.agent_seen(AgentInfo(agent_id="coder-1", agent_type="coder"))
    seen = store.agents_seen()
    assert len(seen) == 2
    assert next(x for x in seen if x.agent_id == "echo-1") == a


def test_message_log(store: SqliteStore) -> None:
    msgs = [
        {"id": "m1", "type": "RUN", "sender": "orchgpt", "recipient": "echo-1", "task_id": "t",
         "session_id": "s", "ts_ms": 1},
        {"id": "m2", "type": "REPLY", "sender": "echo-1", "task_id": "t", "session_id": "s",
         "correlation_id": "m1", "ts_ms": 2},
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
        "test", "SELECT agent_type, prompt_tokens, completion_tokens, cost_usd, model FROM usage "
        "WHERE task_id = ?", (t.task_id,),
    )
    assert tuple(row) == ("coder", 100, 50, 0.0125, "gpt-x")


# ---- migrations ------------------------------------------------------------------------


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST == len(MIGRATIONS) >= 2


def test_database_at_version_1_is_upgraded_and_keeps_its_data(db: Path) -> None:
    db.parent.mkdir(parents=True)
    c = sqlite3.connect(db, isolation_level=None)
    assert migrate(c, target=1) == [1]
    assert schema_version(c) == 1
    t = full_task("old", reply_to="")  # reply_to: a column since version 3
    from orchgpt.store.sqlite import _TASK_COLUMNS, _task_row

    v1 = [c for c in _TASK_COLUMNS if c != "reply_to"]
    row = _task_row(t)
    c.execute(f"INSERT INTO tasks ({', '.join(v1)}, finished) VALUES ({', '.join('?' * (len(v1) + 1))})",
              (*row[:len(v1)], row[-1]))
    c.execute("INSERT INTO sessions (session_id, created_ms, updated_ms, title, published, tags) "
              "VALUES ('sess-1', 1000, 2000, 'old title', 1, '[\"v1\"]')")
    c.execute("INSERT INTO task_events (task_id, seq, kind, ts_ms, payload) "
              "VALUES ('old', 1, 'log', 5, '{\"text\":\"hello\"}')")
    c.close()

    s = SqliteStore(db)
    try:
        assert schema_version(s._conn) == LATEST
        assert s.get_task("old") == t
        assert [e.text for e in s.events("old")] == ["hello"]
        sess = s.get_session("sess-1")
        assert sess is not None and sess.title == "old title" and sess.published and sess.tags == ["v1"]
        # Migration 2 back-filled usage and artifacts from the stored result.
        assert sess.usage.prompt_tokens == 100 and sess.usage_by_agent["coder"].cost_usd == 0.0125
        assert [a.path for a in s.artifacts("old")] == ["README.md", "src/app.py"]
        s.record_messages([{"id": "m", "type": "RUN", "task_id": "old"}])  # v2 table works
    finally:
        s.close()
    # Reopening at the latest version applies nothing and keeps everything.
    s = SqliteStore(db)
    try:
        assert s.get_task("old") == t
    finally:
        s.close()


def test_version_2_reply_to_moves_out_of_the_options(db: Path) -> None:
    """Routing state (the delegation's correlation id) was kept in the user's options as
    ``_reply_to`` up to version 2, and so stored and sent to agents: migration 3 moves it
    into its own column and out of the options."""
    db.parent.mkdir(parents=True)
    c = sqlite3.connect(db, isolation_level=None)
    assert migrate(c, target=2) == [1, 2]
    for task_id, options in (("child", '{"model":"x","_reply_to":"corr-1"}'), ("plain", '{"a":"b"}')):
        c.execute("INSERT INTO tasks (task_id, agent_type, action, state, options, created_ms, "
                  "updated_ms, delegated_by) VALUES (?, 'echo', 'run', 'running', ?, 1, 1, 'mgr')",
                  (task_id, options))
    c.close()
    s = SqliteStore(db)
    try:
        child, plain = s.get_task("child"), s.get_task("plain")
        assert child is not None and child.reply_to == "corr-1" and child.options == {"model": "x"}
        assert plain is not None and plain.reply_to == "" and plain.options == {"a": "b"}
    finally:
        s.close()


def test_failed_migration_rolls_back(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchgpt.store import migrations

    bad = migrations.Migration(LATEST + 1, "broken", "CREATE TABLE ok_table (x); SELECT * FROM no_such_table;")
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, bad))
    monkeypatch.setattr(migrations, "LATEST", LATEST + 1)
    db.parent.mkdir(parents=True)
    c = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            migrations.migrate(c)
        assert schema_version(c) == LATEST  # the earlier ones committed, the broken one did not
        assert c.execute("SELECT name FROM sqlite_master WHERE name = 'ok_table'").fetchone() is None
        assert not c.in_transaction
    finally:
        c.close()


def test_newer_schema_is_refused(db: Path) -> None:
    SqliteStore(db).close()
    c = sqlite3.connect(db)
    c.execute(f"PRAGMA user_version = {LATEST + 5}")
    c.close()
    with pytest.raises(StoreError) as exc:
        SqliteStore(db)
    assert str(db) in str(exc.value) and "newer than this orchgpt supports" in str(exc.value)


# ---- failures ----------------------------------------------------------------------------


def test_corrupt_file_is_reported_at_open(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite, just garbage bytes " * 200)
    with pytest.raises(StoreError) as exc:
        SqliteStore(db)
    msg = str(exc.value)
    assert str(db) in msg and "file is not a database" in msg and "corrupt" in msg


def test_directory_that_cannot_be_created_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "sub" / "orchgpt.db"  # a parent is a regular file: mkdir fails, even as root
    with pytest.raises(StoreError) as exc:
        SqliteStore(path)
    assert str(path) in str(exc.value) and "cannot create directory" in str(exc.value)


def test_path_that_is_a_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SqliteStore(tmp_path)


def test_full_store_fails_the_write_by_name_and_keeps_earlier_data(db: Path) -> None:
    s = SqliteStore(db, max_size_bytes=256 * 1024)
    try:
        s.create_task(Task(task_id="before", agent_type="echo"))
        with pytest.raises(StoreError) as exc:
            for i in range(1000):
                s.create_task(Task(task_id=f"big{i}", agent_type="echo", input="x" * 20_000))
        msg = str(exc.value)
        assert str(db) in msg and "database or disk is full" in msg
        failing = msg.split("create task ")[1].split(" ")[0]
        assert s.get_task(failing) is None  # rolled back, never acknowledged
        assert s.get_task("before") is not None  # reads still work
        assert not s._conn.in_transaction
        with pytest.raises(StoreError, match="append 1 events failed: database or disk is full"):
            s.append_events([TaskEvent(task_id="before", kind=EventKind.TOKEN, seq=1, text="y" * 300_000)])
    finally:
        s.close()


def test_store_full_at_open_is_reported(db: Path) -> None:
    with pytest.raises(StoreError) as exc:
        SqliteStore(db, max_size_bytes=8 * 1024)  # too small for the schema
    assert str(db) in str(exc.value) and "full" in str(exc.value)


def _immutable(path: Path, on: bool) -> bool:
    chattr = shutil.which("chattr")
    if not chattr:
        return False
    r = subprocess.run([chattr, "+i" if on else "-i", str(path)], capture_output=True, timeout=10)
    return r.returncode == 0


def test_read_only_file_is_reported_at_open(db: Path) -> None:
    SqliteStore(db).close()
    if os.geteuid() != 0:
        db.chmod(0o444)
        db.parent.chmod(0o555)
        undo = lambda: (db.parent.chmod(0o755), db.chmod(0o644))  # noqa: E731
    elif _immutable(db, True):  # root ignores file modes; the immutable flag binds root too
        undo = lambda: _immutable(db, False)  # noqa: E731
    else:
        pytest.skip("running as root without chattr +i support: cannot make a file read-only")
    try:
        with pytest.raises(StoreError) as exc:
            SqliteStore(db)
        msg = str(exc.value)
        assert str(db) in msg
        assert "readonly" in msg or "unable to open" in msg
    finally:
        undo()


FILL_DISK = textwrap.dedent(
    """
    import json, sys
    from orchgpt.errors import StoreError
    from orchgpt.models import Task
    from orchgpt.store.sqlite import SqliteStore
    s = SqliteStore(sys.argv[1])
    out = {"error": "", "stored": 0}
    try:
        for i in range(100000):
            s.create_task(Task(task_id=f"t{i}", agent_type="echo", input="x" * 5000))
            out["stored"] = i + 1
    except StoreError as exc:
        out["error"] = str(exc)
    out["first_readable"] = s.get_task("t0") is not None
    out["failed_absent"] = s.get_task(f"t{out['stored']}") is None
    print(json.dumps(out))
    """
)


def test_a_real_full_disk_fails_the_write_by_name(tmp_path: Path) -> None:
    """A small tmpfs mounted in a private user+mount namespace: a real ENOSPC, no root needed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    db = mnt / "orchgpt.db"
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not permitted here: {probe.stderr.decode().strip()}")
    script = f"mount -t tmpfs -o size=512k tmpfs {mnt} && exec {sys.executable} -c \"$0\" {db}"
    r = subprocess.run([unshare, "-rm", "sh", "-c", script, FILL_DISK], capture_output=True, text=True,
                       timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["stored"] > 0
    assert str(db) in out["error"] and "database or disk is full" in out["error"], out
    assert out["first_readable"] and out["failed_absent"], out
