"""The schema of the artifacts kept in the database (issue 19; a migration of migrations.py).

Used on PostgreSQL (orchgpt/artifact_db.py): ``artifact_blobs`` one row per distinct content
(its sha256 and size), ``artifact_chunks`` its bytes in rows of at most 256 KiB (so no row is
huge and a read streams), ``artifact_files`` each task's files by task-relative path. SQLite
creates the same tables and leaves them empty: its daemon keeps its blobs on disk
(artifact_store.py).
"""

from __future__ import annotations

DESCRIPTION = "artifacts in the database (issue 19): content-addressed blobs in chunks, and each task's files"

_TABLES = """
        CREATE TABLE artifact_blobs (
            sha256     TEXT PRIMARY KEY,
            size       INTEGER NOT NULL,
            chunks     INTEGER NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE artifact_chunks (
            sha256 TEXT NOT NULL REFERENCES artifact_blobs(sha256) ON DELETE CASCADE,
            n      INTEGER NOT NULL,
            data   {blob} NOT NULL,
            PRIMARY KEY (sha256, n)
        );
        CREATE TABLE artifact_files (
            task_id    TEXT NOT NULL,
            path       TEXT NOT NULL,
            sha256     TEXT NOT NULL REFERENCES artifact_blobs(sha256),
            size       INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            PRIMARY KEY (task_id, path)
        );
        CREATE INDEX artifact_files_blob ON artifact_files(sha256);
        """

SQLITE = _TABLES.format(blob="BLOB")
POSTGRES = _TABLES.format(blob="BYTEA").replace("INTEGER", "BIGINT")
