"""SqliteStore's schema migrations on real SQLite files: in order, upgrading old data, rolled back
on failure, a newer schema refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchgpt.errors import StoreError
from orchgpt.store.migrations import LATEST, MIGRATIONS, migrate, schema_version
from orchgpt.store.sqlite import SqliteStore
from tests.support import store_fixtures
from tests.support.store_fixtures import full_task

# The shared fixtures (pytest finds a fixture by its name in the test's module).
db = store_fixtures.db


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
    c.execute(
        f"INSERT INTO tasks ({', '.join(v1)}, finished) VALUES ({', '.join('?' * (len(v1) + 1))})",
        (*row[: len(v1)], row[-1]),
    )
    c.execute(
        "INSERT INTO sessions (session_id, created_ms, updated_ms, title, published, tags) "
        "VALUES ('sess-1', 1000, 2000, 'old title', 1, '[\"v1\"]')"
    )
    c.execute(
        "INSERT INTO task_events (task_id, seq, kind, ts_ms, payload) "
        "VALUES ('old', 1, 'log', 5, '{\"text\":\"hello\"}')"
    )
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
        c.execute(
            "INSERT INTO tasks (task_id, agent_type, action, state, options, created_ms, "
            "updated_ms, delegated_by) VALUES (?, 'echo', 'run', 'running', ?, 1, 1, 'mgr')",
            (task_id, options),
        )
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
