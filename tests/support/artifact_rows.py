"""What a test daemon's artifact store holds, wherever it keeps it: its data dir on SQLite
(``artifacts/sha256/..`` and ``artifacts/tasks/<id>.json``, orchgpt/artifact_store.py), the
database's ``artifact_*`` tables on PostgreSQL (orchgpt/artifact_db.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.mesh import Daemon


def in_database(d: Daemon) -> bool:
    return d.store_url.startswith(("postgres://", "postgresql://"))


def _rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(sql, params).fetchall())


def blobs(d: Daemon) -> list[str]:
    """The sha256 of every blob stored, sorted."""
    if in_database(d):
        return [str(r[0]) for r in _rows(d.store_url, "SELECT sha256 FROM artifact_blobs ORDER BY sha256")]
    root = d.data_dir / "artifacts" / "sha256"
    return sorted(p.parent.name + p.name for p in root.glob("*/*") if p.is_file())


def blob_bytes(d: Daemon, sha256: str) -> bytes | None:
    if in_database(d):
        rows = _rows(d.store_url, "SELECT data FROM artifact_chunks WHERE sha256 = %s ORDER BY n", (sha256,))
        return b"".join(bytes(r[0]) for r in rows) if rows else None
    p = blob_path(d, sha256)
    return p.read_bytes() if p.is_file() else None


def blob_path(d: Daemon, sha256: str) -> Path:
    return d.data_dir / "artifacts" / "sha256" / sha256[:2] / sha256[2:]


def files_of(d: Daemon, task_id: str) -> dict[str, dict[str, Any]]:
    """The task's recorded files: {path: {"sha256": .., "size": ..}} ({} when none)."""
    if in_database(d):
        rows = _rows(d.store_url, "SELECT path, sha256, size FROM artifact_files WHERE task_id = %s", (task_id,))
        return {str(r[0]): {"sha256": str(r[1]), "size": int(r[2])} for r in rows}
    index = d.data_dir / "artifacts" / "tasks" / f"{task_id}.json"
    return dict(json.loads(index.read_text())) if index.exists() else {}
