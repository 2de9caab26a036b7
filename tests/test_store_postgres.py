"""The store on a real PostgreSQL server (issue 19, first step: one daemon).

The store's shared contract runs on both backends in test_store_sqlite.py; here what is
PostgreSQL's own: migrating under the advisory lock, a newer schema refused, no password
in errors or logs, and a real daemon on ``--store postgresql://...`` across a restart.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchgpt.errors import StoreError
from orchgpt.models import Task, TaskState
from orchgpt.store import open_store, redact_url
from orchgpt.store.migrations import LATEST
from tests.support.mesh import Daemon
from tests.test_cli_history import cli

pytestmark = pytest.mark.timeout(120)


def _sql(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_redact_url() -> None:
    assert redact_url("postgresql://u:s3cr%40t@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db?password=xyz&x=1") == "postgresql://u@h/db?password=***&x=1"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_daemons_starting_together_migrate_once(postgres_url: str) -> None:
    stores, errors = [], []

    def opener() -> None:
        try:
            stores.append(open_store(postgres_url))
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(stores) == 4
    assert _sql(postgres_url, "SELECT version FROM orchgpt_schema") == [(LATEST,)]
    stores[0].create_task(Task(task_id="one", agent_type="echo"))
    assert stores[3].get_task("one") is not None  # one database, seen by every store
    for s in stores:
        s.close()


def test_newer_schema_is_refused(postgres_url: str) -> None:
    open_store(postgres_url).close()
    _sql(postgres_url, "UPDATE orchgpt_schema SET version = %s", (LATEST + 1,))
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} is newer"):
        open_store(postgres_url)


def test_wrong_password_is_reported_without_the_password(postgres_server) -> None:  # type: ignore[no-untyped-def]
    url = postgres_server.url().replace(postgres_server.password, "not-the-PASSWORD-42")
    with pytest.raises(StoreError) as e:
        open_store(url)
    msg = str(e.value)
    assert "not-the-PASSWORD-42" not in msg and "***" in msg
    assert "password authentication failed" in msg


def test_task_state_survives_a_reopen(postgres_url: str) -> None:
    s = open_store(postgres_url)
    t = Task(task_id="r", agent_type="echo", input="x")
    s.create_task(t)
    t.state = TaskState.RUNNING
    s.save_task(t)
    s.close()
    s = open_store(postgres_url)
    try:
        assert [u.task_id for u in s.unfinished_tasks()] == ["r"]
        assert s.get_task("r") == t
    finally:
        s.close()


def test_daemon_on_postgres_keeps_its_tasks_across_a_restart(
    daemon_factory,
    postgres_url: str,
    postgres_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    d: Daemon = daemon_factory("--store", postgres_url).start()
    r = cli(d, "-c", '/echo run "x marks the spot" --id pg-1')
    assert r.returncode == 0, r.stderr + d.log()
    assert "x marks the spot" in r.stdout
    port = d.port
    assert d.stop() == 0
    # In the database, not in a SQLite file nor in a directory named "postgresql:".
    [(state, inp)] = _sql(postgres_url, "SELECT state, input FROM tasks WHERE task_id = 'pg-1'")
    assert (state, inp) == ("succeeded", "x marks the spot")
    assert not (tmp_path / "postgresql:").exists()
    assert not list(tmp_path.rglob("*.db"))
    d.start(port=port)  # a new process on the same database
    task = cli(d, "-c", "/task pg-1")
    assert task.returncode == 0 and "x marks the spot" in task.stdout and "succeeded" in task.stdout
    hist = cli(d, "-c", "/history 5")
    assert hist.returncode == 0 and "pg-1" in hist.stdout
    assert postgres_server.password not in d.log()  # the URL is logged masked
    assert "***@127.0.0.1" in d.log()


def test_a_dropped_connection_is_replaced_where_nothing_ran(postgres_url: str) -> None:
    """A write whose BEGIN found the connection dropped (nothing ran) and a read are retried
    once on a new connection (issue 19: pg_terminate_backend, a failover)."""
    s = open_store(postgres_url)
    faults: list[str] = []
    s.on_fault = faults.append
    kill = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'orchgpt' AND pid <> pg_backend_pid()"
    )
    try:
        s.create_task(Task(task_id="before", agent_type="echo"))
        _sql(postgres_url, kill)
        s.create_task(Task(task_id="during", agent_type="echo"))
        assert faults == []
        _sql(postgres_url, kill)
        assert s.get_task("during") is not None  # a read
        s.check()
        s.create_task(Task(task_id="after", agent_type="echo"))
        assert {t.task_id for t in s.list_tasks()} == {"before", "during", "after"}
    finally:
        s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get_task("after")


def test_migrations_2_and_3_upgrade_an_old_database(postgres_url: str) -> None:
    """The PostgreSQL text of migrations 2 (usage and artifacts back-filled from results)
    and 3 (reply_to out of the options), run on a database brought back to version 1."""
    open_store(postgres_url).close()
    # back to version 1: every table a later migration made goes (whichever migrations exist)
    v1 = {"orchgpt_schema", "store_meta", "sessions", "tasks", "task_events", "agents_seen"}
    later = [
        t
        for (t,) in _sql(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        if t not in v1
    ]
    _sql(
        postgres_url,
        f"DROP TABLE {', '.join(later)} CASCADE; ALTER TABLE tasks DROP COLUMN reply_to; "
        "UPDATE orchgpt_schema SET version = 1",
    )
    result = (
        '{"task_id":"old","state":"succeeded","usage":{"prompt_tokens":7,'
        '"completion_tokens":3,"cost_usd":0.25,"model":"m","calls":2},'
        '"artifacts":[{"path":"a.py","size":4,"sha256":"ab","kind":"code"}]}'
    )
    _sql(
        postgres_url,
        "INSERT INTO tasks (task_id, agent_type, action, options, state, created_ms, updated_ms, "
        "result, finished) VALUES ('old', 'coder', 'run', %s, 'succeeded', 1, 2, %s, 1)",
        ('{"model":"x","_reply_to":"corr-1"}', result),
    )
    s = open_store(postgres_url)
    try:
        t = s.get_task("old")
        assert t is not None and t.reply_to == "corr-1" and t.options == {"model": "x"}
        assert [a.path for a in s.artifacts("old")] == ["a.py"]  # type: ignore[attr-defined]
        [row] = _sql(
            postgres_url,
            "SELECT prompt_tokens, completion_tokens, cost_usd, model, calls FROM usage WHERE task_id = 'old'",
        )
        assert row == (7, 3, 0.25, "m", 2)
    finally:
        s.close()
    assert _sql(postgres_url, "SELECT version FROM orchgpt_schema") == [(LATEST,)]


WRITER = """
import sys, time
from orchgpt.models import Task, TaskState
from orchgpt.store import open_store
s = open_store(sys.argv[1])
for i in range(20):
    t = Task(task_id=f"k{i:02d}", agent_type="echo", input=str(i), created_ms=1000 + i)
    s.create_task(t)
    t.state = TaskState.RUNNING
    s.save_task(t)
s._conn.execute("BEGIN")  # a write in flight when the process dies: never committed
s._conn.execute("UPDATE tasks SET state = 'succeeded' WHERE task_id = 'k00'")
print("committed", flush=True)
time.sleep(60)
"""


def test_committed_writes_survive_sigkill(postgres_url: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-c", WRITER, postgres_url],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    try:
        assert p.stdout is not None
        lines = iter(p.stdout.readline, b"")  # log lines first; ends if the writer dies
        assert any(line.strip() == b"committed" for line in lines)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    s = open_store(postgres_url)
    try:
        tasks = s.unfinished_tasks()
        assert [t.task_id for t in tasks] == [f"k{i:02d}" for i in range(20)]
        assert {t.state for t in tasks} == {TaskState.RUNNING}  # k00's update rolled back
    finally:
        s.close()
