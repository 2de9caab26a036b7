"""Versioned schema of the stores (SQLite, and PostgreSQL: postgres.py).

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS`` is the
ordered list of every schema change ever shipped; a database at version N gets
migrations N+1.. applied in order at open, each in its own transaction together
with the new version number, so a crash mid-upgrade leaves the previous version
intact. Never edit a shipped migration: append a new one.

PostgreSQL runs the same list (postgres.py keeps its version in ``orchgpt_schema``): the
DDL is portable once ``postgres_sql`` maps the types (INTEGER -> BIGINT for the
millisecond clocks, REAL -> DOUBLE PRECISION); a migration whose SQL is not portable
(SQLite's JSON functions, ``INSERT OR ...``, ``rowid``) carries its PostgreSQL text in
``postgres``, and ``postgres_extra`` is appended on PostgreSQL only.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from ..errors import ErrorCode, OrchgptError
from . import migrations_artifacts


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    postgres: str | None = None  # the PostgreSQL text when ``sql`` is not portable
    postgres_extra: str = ""  # appended on PostgreSQL only


def postgres_sql(m: Migration) -> str:
    """The migration's SQL for PostgreSQL."""
    if m.postgres is not None:
        return m.postgres
    sql = re.sub(r"\bINTEGER\b", "BIGINT", m.sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return sql + m.postgres_extra


_V2_PG = """
        CREATE TABLE messages (
            id             TEXT PRIMARY KEY,
            type           TEXT NOT NULL,
            sender         TEXT NOT NULL DEFAULT '',
            recipient      TEXT NOT NULL DEFAULT '',
            task_id        TEXT NOT NULL DEFAULT '',
            session_id     TEXT NOT NULL DEFAULT '',
            correlation_id TEXT NOT NULL DEFAULT '',
            ts_ms          BIGINT NOT NULL,
            rowid          BIGSERIAL
        );
        CREATE INDEX messages_task ON messages(task_id, ts_ms);
        CREATE INDEX messages_session ON messages(session_id, ts_ms);
        CREATE TABLE usage (
            task_id           TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            agent_type        TEXT NOT NULL,
            session_id        TEXT NOT NULL DEFAULT '',
            prompt_tokens     BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd          DOUBLE PRECISION NOT NULL DEFAULT 0,
            model             TEXT NOT NULL DEFAULT '',
            calls             BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (task_id, agent_type)
        );
        CREATE INDEX usage_session ON usage(session_id);
        CREATE TABLE artifacts (
            task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            path    TEXT NOT NULL,
            size    BIGINT NOT NULL DEFAULT 0,
            sha256  TEXT NOT NULL DEFAULT '',
            kind    TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (task_id, path)
        );
        INSERT INTO usage
            (task_id, agent_type, session_id, prompt_tokens, completion_tokens, cost_usd, model, calls)
        SELECT task_id, agent_type, session_id,
               coalesce((result::jsonb #>> '{usage,prompt_tokens}')::bigint, 0),
               coalesce((result::jsonb #>> '{usage,completion_tokens}')::bigint, 0),
               coalesce((result::jsonb #>> '{usage,cost_usd}')::double precision, 0),
               coalesce(result::jsonb #>> '{usage,model}', ''),
               coalesce((result::jsonb #>> '{usage,calls}')::bigint, 0)
        FROM tasks WHERE result IS NOT NULL
        ON CONFLICT (task_id, agent_type) DO NOTHING;
        INSERT INTO artifacts (task_id, path, size, sha256, kind)
        SELECT t.task_id, a.value ->> 'path', coalesce((a.value ->> 'size')::bigint, 0),
               coalesce(a.value ->> 'sha256', ''), coalesce(a.value ->> 'kind', '')
        FROM tasks AS t,
             jsonb_array_elements(coalesce(t.result::jsonb -> 'artifacts', '[]'::jsonb)) AS a
        WHERE t.result IS NOT NULL AND a.value ->> 'path' IS NOT NULL
        ON CONFLICT (task_id, path) DO NOTHING;
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks, task events, sessions, agents seen",
        """
        CREATE TABLE store_meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE sessions (
            session_id   TEXT PRIMARY KEY,
            created_ms   INTEGER NOT NULL,
            updated_ms   INTEGER NOT NULL,
            title        TEXT NOT NULL DEFAULT '',
            published    INTEGER NOT NULL DEFAULT 0,
            published_ms INTEGER NOT NULL DEFAULT 0,
            tags         TEXT NOT NULL DEFAULT '[]'
        );
        CREATE TABLE tasks (
            task_id        TEXT PRIMARY KEY,
            agent_type     TEXT NOT NULL,
            action         TEXT NOT NULL,
            input          TEXT NOT NULL DEFAULT '',
            language       TEXT NOT NULL DEFAULT '',
            session_id     TEXT NOT NULL DEFAULT '',
            parent_task_id TEXT NOT NULL DEFAULT '',
            approval       INTEGER NOT NULL DEFAULT 0,
            options        TEXT NOT NULL DEFAULT '{}',
            state          TEXT NOT NULL,
            agent_id       TEXT NOT NULL DEFAULT '',
            attempts       INTEGER NOT NULL DEFAULT 0,
            created_ms     INTEGER NOT NULL,
            updated_ms     INTEGER NOT NULL,
            result         TEXT,
            error          TEXT NOT NULL DEFAULT '',
            submitted_by   TEXT NOT NULL DEFAULT '',
            delegated_by   TEXT NOT NULL DEFAULT '',
            inputs         TEXT NOT NULL DEFAULT '[]',
            -- 1 once the state is terminal: only the transition to a terminal state
            -- touches the unfinished index (not every queued/assigned/running save).
            finished       INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX tasks_session ON tasks(session_id, created_ms);
        CREATE INDEX tasks_parent ON tasks(parent_task_id, created_ms);
        CREATE INDEX tasks_unfinished ON tasks(created_ms) WHERE finished = 0;
        CREATE TABLE task_events (
            task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            seq     INTEGER NOT NULL,
            kind    TEXT NOT NULL,
            ts_ms   INTEGER NOT NULL,
            payload TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (task_id, seq)
        );
        CREATE TABLE agents_seen (
            agent_id          TEXT PRIMARY KEY,
            agent_type        TEXT NOT NULL,
            capabilities      TEXT NOT NULL DEFAULT '[]',
            host              TEXT NOT NULL DEFAULT '',
            state             TEXT NOT NULL DEFAULT '',
            current_task      TEXT NOT NULL DEFAULT '',
            last_heartbeat_ms INTEGER NOT NULL DEFAULT 0,
            local             INTEGER NOT NULL DEFAULT 0,
            connected_ms      INTEGER NOT NULL DEFAULT 0,
            first_seen_ms     INTEGER NOT NULL,
            last_seen_ms      INTEGER NOT NULL
        );
        """,
        # list order breaks ties on insertion order, as SQLite's rowid does
        postgres_extra="""
        ALTER TABLE tasks ADD COLUMN rowid BIGSERIAL;
        ALTER TABLE sessions ADD COLUMN rowid BIGSERIAL;
        """,
    ),
    Migration(
        2,
        "IAC message log, token usage, artifact index (back-filled from task results)",
        """
        CREATE TABLE messages (
            id             TEXT PRIMARY KEY,
            type           TEXT NOT NULL,
            sender         TEXT NOT NULL DEFAULT '',
            recipient      TEXT NOT NULL DEFAULT '',
            task_id        TEXT NOT NULL DEFAULT '',
            session_id     TEXT NOT NULL DEFAULT '',
            correlation_id TEXT NOT NULL DEFAULT '',
            ts_ms          INTEGER NOT NULL
        );
        CREATE INDEX messages_task ON messages(task_id, ts_ms);
        CREATE INDEX messages_session ON messages(session_id, ts_ms);
        CREATE TABLE usage (
            task_id           TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            agent_type        TEXT NOT NULL,
            session_id        TEXT NOT NULL DEFAULT '',
            prompt_tokens     INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd          REAL NOT NULL DEFAULT 0,
            model             TEXT NOT NULL DEFAULT '',
            calls             INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (task_id, agent_type)
        );
        CREATE INDEX usage_session ON usage(session_id);
        CREATE TABLE artifacts (
            task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            path    TEXT NOT NULL,
            size    INTEGER NOT NULL DEFAULT 0,
            sha256  TEXT NOT NULL DEFAULT '',
            kind    TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (task_id, path)
        );
        INSERT OR REPLACE INTO usage
            (task_id, agent_type, session_id, prompt_tokens, completion_tokens, cost_usd, model, calls)
        SELECT task_id, agent_type, session_id,
               coalesce(json_extract(result, '$.usage.prompt_tokens'), 0),
               coalesce(json_extract(result, '$.usage.completion_tokens'), 0),
               coalesce(json_extract(result, '$.usage.cost_usd'), 0),
               coalesce(json_extract(result, '$.usage.model'), ''),
               coalesce(json_extract(result, '$.usage.calls'), 0)
        FROM tasks WHERE result IS NOT NULL AND json_valid(result);
        INSERT OR REPLACE INTO artifacts (task_id, path, size, sha256, kind)
        SELECT t.task_id, json_extract(a.value, '$.path'),
               coalesce(json_extract(a.value, '$.size'), 0),
               coalesce(json_extract(a.value, '$.sha256'), ''),
               coalesce(json_extract(a.value, '$.kind'), '')
        FROM tasks AS t, json_each(t.result, '$.artifacts') AS a
        WHERE t.result IS NOT NULL AND json_valid(t.result);
        """,
        postgres=_V2_PG,
    ),
    Migration(
        3,
        "routing state out of user options: tasks.reply_to (was options._reply_to)",
        """
        ALTER TABLE tasks ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
        UPDATE tasks SET reply_to = json_extract(options, '$._reply_to'),
                         options = json_remove(options, '$._reply_to')
        WHERE json_valid(options) AND json_type(options, '$._reply_to') = 'text';
        """,
        postgres="""
        ALTER TABLE tasks ADD COLUMN reply_to TEXT NOT NULL DEFAULT '';
        UPDATE tasks SET reply_to = options::jsonb ->> '_reply_to',
                         options = (options::jsonb - '_reply_to')::text
        WHERE options::jsonb ? '_reply_to' AND jsonb_typeof(options::jsonb -> '_reply_to') = 'string';
        """,
    ),
    Migration(
        4,
        "session transcripts: session_messages (commands, results, workflow turns)",
        """
        CREATE TABLE session_messages (
            message_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            task_id    TEXT NOT NULL DEFAULT '',
            speaker    TEXT NOT NULL DEFAULT '',
            role       TEXT NOT NULL DEFAULT '',
            content    TEXT NOT NULL DEFAULT '',
            ts_ms      INTEGER NOT NULL,
            n          INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX session_messages_session ON session_messages(session_id, ts_ms, n);
        """,
    ),
    Migration(
        5,
        "graphs of blocks, versioned (orchgpt/store/sqlite_graphs.py)",
        """
        CREATE TABLE graphs (
            graph_id   TEXT NOT NULL,
            version    INTEGER NOT NULL,
            owner      TEXT NOT NULL DEFAULT '',
            name       TEXT NOT NULL DEFAULT '',
            definition TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            deleted_ms INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (graph_id, version)
        );
        CREATE INDEX graphs_owner ON graphs(owner, created_ms);
        """,
    ),
    Migration(
        6,
        "schedules (a stored command fired on a cron expression) and their run history",
        """
        CREATE TABLE schedules (
            schedule_id  TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,
            cron         TEXT NOT NULL,
            timezone     TEXT NOT NULL DEFAULT 'UTC',
            command      TEXT NOT NULL,
            catch_up     TEXT NOT NULL DEFAULT 'once',
            state        TEXT NOT NULL DEFAULT 'active',
            created_ms   INTEGER NOT NULL,
            updated_ms   INTEGER NOT NULL,
            next_run_ms  INTEGER NOT NULL DEFAULT 0,
            last_run_ms  INTEGER NOT NULL DEFAULT 0,
            last_task_id TEXT NOT NULL DEFAULT '',
            last_error   TEXT NOT NULL DEFAULT '',
            runs         INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX schedules_owner ON schedules(owner, created_ms);
        CREATE INDEX schedules_due ON schedules(next_run_ms) WHERE state = 'active';
        CREATE TABLE schedule_runs (
            schedule_id    TEXT NOT NULL REFERENCES schedules(schedule_id) ON DELETE CASCADE,
            tick_ms        INTEGER NOT NULL,
            fired_ms       INTEGER NOT NULL,
            kind           TEXT NOT NULL,
            state          TEXT NOT NULL,
            task_id        TEXT NOT NULL DEFAULT '',
            missed_from_ms INTEGER NOT NULL DEFAULT 0,
            error          TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (schedule_id, tick_ms)
        );
        CREATE INDEX schedule_runs_claimed ON schedule_runs(fired_ms) WHERE state = 'claimed';
        """,
    ),
    Migration(
        7,
        "A2A push-notification configs (they survive a restart of the daemon)",
        """
        CREATE TABLE a2a_push_configs (
            task_id    TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            config_id  TEXT NOT NULL,
            config     TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            PRIMARY KEY (task_id, config_id)
        );
        """,
    ),
    Migration(
        8,
        "cluster (issue 19, docs/scaling.md): daemons' heartbeats, their agents, task claims",
        """
        CREATE TABLE cluster_daemons (
            daemon_id    TEXT PRIMARY KEY,
            pid          INTEGER NOT NULL DEFAULT 0,
            host         TEXT NOT NULL DEFAULT '',
            started_ms   INTEGER NOT NULL,
            heartbeat_ms INTEGER NOT NULL
        );
        CREATE TABLE cluster_agents (
            agent_id     TEXT NOT NULL,
            daemon_id    TEXT NOT NULL,
            agent_type   TEXT NOT NULL,
            state        TEXT NOT NULL,
            current_task TEXT NOT NULL DEFAULT '',
            host         TEXT NOT NULL DEFAULT '',
            updated_ms   INTEGER NOT NULL,
            PRIMARY KEY (agent_id, daemon_id)
        );
        CREATE INDEX cluster_agents_type ON cluster_agents(agent_type);
        CREATE TABLE cluster_claims (
            task_id        TEXT PRIMARY KEY REFERENCES tasks(task_id) ON DELETE CASCADE,
            daemon_id      TEXT NOT NULL DEFAULT '',
            agent_type     TEXT NOT NULL,
            lease_until_ms INTEGER NOT NULL DEFAULT 0,
            offered_ms     INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX cluster_claims_daemon ON cluster_claims(daemon_id, agent_type, offered_ms);
        """,
    ),
    Migration(
        9,
        "cluster requests (issue 19): cancels and approvals for the daemon holding a task, durable",
        """
        CREATE TABLE cluster_requests (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id    TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            kind       TEXT NOT NULL,
            payload    TEXT NOT NULL DEFAULT '',
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX cluster_requests_task ON cluster_requests(task_id);
        """,
        postgres="""
        CREATE TABLE cluster_requests (
            id         BIGSERIAL PRIMARY KEY,
            task_id    TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
            kind       TEXT NOT NULL,
            payload    TEXT NOT NULL DEFAULT '',
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX cluster_requests_task ON cluster_requests(task_id);
        """,
    ),
    Migration(
        10,
        "cluster messages (issue 19): delegation replies and agent-to-agent envelopes for an agent on another daemon",
        """
        CREATE TABLE cluster_messages (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_id   TEXT NOT NULL,
            kind       TEXT NOT NULL,
            payload    TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX cluster_messages_agent ON cluster_messages(agent_id, id);
        """,
        postgres="""
        CREATE TABLE cluster_messages (
            id         BIGSERIAL PRIMARY KEY,
            agent_id   TEXT NOT NULL,
            kind       TEXT NOT NULL,
            payload    TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX cluster_messages_agent ON cluster_messages(agent_id, id);
        """,
    ),
    Migration(11, migrations_artifacts.DESCRIPTION, migrations_artifacts.SQLITE, migrations_artifacts.POSTGRES),
)

LATEST = MIGRATIONS[-1].version


class SchemaTooNew(OrchgptError):
    """The database was written by a newer orchgpt (its version is above LATEST)."""

    code = ErrorCode.FAILED_PRECONDITION


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int | None = None) -> list[int]:
    """Apply the pending migrations up to ``target`` (default: all), in order.

    The connection must be in autocommit mode (``isolation_level=None``). Each
    migration runs in one ``BEGIN IMMEDIATE`` transaction that also sets
    ``user_version``; on error it is rolled back and the error propagates.
    Returns the versions applied.
    """
    target = LATEST if target is None else target
    current = schema_version(conn)
    if current > LATEST:
        raise SchemaTooNew(f"schema version {current} is newer than this orchgpt supports ({LATEST}); upgrade orchgpt")
    applied: list[int] = []
    for m in MIGRATIONS:
        if m.version <= current or m.version > target:
            continue
        try:
            # executescript commits any open transaction first, so the script carries
            # its own BEGIN/COMMIT: the DDL and the version bump commit together.
            conn.executescript(f"BEGIN IMMEDIATE;\n{m.sql}\nPRAGMA user_version = {int(m.version)};\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(m.version)
    return applied
