"""Artifacts in the database when the store is PostgreSQL (issue 19, docs/scaling.md): every
daemon of a cluster serves every file, whichever daemon its agent uploaded it through.

Tables (store/migrations_artifacts.py): ``artifact_blobs`` (sha256, size), ``artifact_chunks``
(sha256, n, data: the bytes in rows of ``CHUNK``), ``artifact_files`` (task_id, path -> sha256,
size). Content-addressed: a second upload of the same bytes, from any daemon, stores no second
copy (two daemons writing the same blob at once: the second's ``INSERT .. ON CONFLICT DO
NOTHING`` waits for the first's commit, then skips the chunks).

An upload in progress stays in this daemon's ``tmp/`` as on SQLite (artifact_store.py does the
chunk checks, the sha256 and the resumes). On the verified end of file the blob and the file
row are written in one transaction, in the background on the artifact pool (an async psycopg
pool of its own), so that writing a large file never holds the daemon's event loop; the
agent's next messages wait for that write (servicer_uploads.py), so its REPLY is handled after
its files are readable on every daemon. ``artifact_store_max_bytes`` caps the sum of the blobs'
sizes in the database, checked in that transaction under an advisory lock (cluster-wide: two
daemons cannot both fill the last bytes). Reading (FetchArtifact) streams a few chunks per
query and checks the sha256 of what it read before it sends the last piece.

The small reads on the loop (the total at start, whether a file is recorded, for FILE_RESUME)
go through the store's own connection like the store's other reads (store/postgres.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import logs
from .artifact_store import ArtifactStore, UploadError, _Upload
from .artifacts import ArtifactError, ArtifactReader, check_path
from .errors import StoreError
from .models import now_ms
from .store.base import Store

if TYPE_CHECKING:
    from .store.postgres import PostgresStore

log = logs.get("orchgpt.artifact_db")
CHUNK = 256 * 1024  # bytes per artifact_chunks row
WINDOW = 4  # chunks read per query while serving a file (memory: WINDOW x CHUNK)
_CAP_LOCK = 0x61727466  # "artf": the advisory lock held while a new blob is checked against the cap


def open_artifact_store(store: Store | None, root: Path, max_bytes: int) -> ArtifactStore:
    """The daemon's artifact store: in the database when the store is PostgreSQL, else on disk."""
    from .store.postgres import PostgresStore  # not imported by a daemon on SQLite (psycopg: ~0.1 s)

    if isinstance(store, PostgresStore):
        return DbArtifactStore(root, max_bytes, store)
    return ArtifactStore(root, max_bytes)


class DbArtifactStore(ArtifactStore):
    def __init__(self, root: Path, max_bytes: int, store: PostgresStore) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.store = store  # a PostgresStore: its url, and its connection for the small reads
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            store.url,
            min_size=0,
            max_size=4,
            open=False,
            timeout=10,
            check=AsyncConnectionPool.check_connection,  # one dropped by the server is replaced
            kwargs={"autocommit": True, "application_name": "orchgpt-artifacts"},
        )
        self._opening: asyncio.Future[None] | None = None  # the pool opens on first use
        self._commits: dict[str, asyncio.Future[Any]] = {}
        super().__init__(root, max_bytes)

    def _stored_total(self) -> int:
        rows = self.store._read("read the artifacts' total size", "SELECT coalesce(sum(size), 0) FROM artifact_blobs")
        return int(rows[0][0])

    async def _conn_pool(self) -> Any:
        if self._opening is None:  # every first user waits for the one opening
            self._opening = asyncio.ensure_future(self.pool.open())
        await asyncio.shield(self._opening)
        return self.pool

    async def close(self) -> None:
        if self._opening is not None:
            await self.pool.close(timeout=2)

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        from .store.postgres import _cause

        return StoreError(f"store {self.store.path}: {what} failed: {_cause(exc, self.store.url)}")

    # ------------------------------------------------------------------ reading
    def _recorded(self, task_id: str, key: str) -> tuple[str, int] | None:
        try:
            rows = self.store._read(
                f"read artifact {key} of task {task_id}",
                "SELECT sha256, size FROM artifact_files WHERE task_id = ? AND path = ?",
                (task_id, key),
            )
        except StoreError as exc:  # an ERROR to the agent, which tries again later; its stream stays
            raise UploadError(str(exc), "UNAVAILABLE") from None
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    async def open_reader(self, task_id: str, path: str) -> ArtifactReader | None:
        """The task's file from the database; else one this daemon stored on its disk before
        its artifacts moved to the database (``open``: the on-disk index and blobs, O_NOFOLLOW)."""
        key = "/".join(check_path(path))
        rows = await self._query(
            f"read artifact {key} of task {task_id}",
            "SELECT sha256, size FROM artifact_files WHERE task_id = %s AND path = %s",
            (task_id, key),
        )
        return DbBlob(self, str(rows[0][0]), int(rows[0][1])) if rows else self.open(task_id, path)

    async def _query(self, what: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            pool = await self._conn_pool()
            async with pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return list(await cur.fetchall())
        except (psycopg.Error, PoolTimeout) as exc:
            log.error("artifact_read_failed", what=what, error=str(self._fail(what, exc)))
            raise ArtifactError(f"{self._fail(what, exc)}", "UNAVAILABLE") from None

    # ------------------------------------------------------------------ writing
    def pending_commit(self, agent_id: str) -> asyncio.Future[Any] | None:
        return self._commits.pop(agent_id, None)

    def _commit(self, ukey: tuple[str, str, str], up: _Upload, digest: str, task_id: str, key: str) -> None:
        up.f.flush()
        up.f.close()
        self._uploads.pop(ukey, None)
        self.committing += up.size
        self._commits[ukey[0]] = asyncio.ensure_future(self._write(up, digest, task_id, key))

    async def _write(self, up: _Upload, digest: str, task_id: str, key: str) -> None:
        """The blob (unless stored already) and the file row, in one transaction. UploadError:
        RESOURCE_EXHAUSTED over the cap, UNAVAILABLE when the database refuses."""
        import psycopg
        from psycopg_pool import PoolTimeout

        what = f"store artifact {key} of task {task_id}"
        try:
            pool = await self._conn_pool()
            async with pool.connection() as conn, conn.transaction():
                dedup = await self._put_blob(conn, up, digest, key)
                await conn.execute(
                    "INSERT INTO artifact_files (task_id, path, sha256, size, created_ms) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (task_id, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, "
                    "created_ms = excluded.created_ms",
                    (task_id, key, digest, up.size, now_ms()),
                )
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            log.error("artifact_store_failed", task_id=task_id, path=key, error=str(self._fail(what, exc)))
            raise UploadError(f"cannot store {key!r}: {self._fail(what, exc)}", "UNAVAILABLE") from None
        finally:
            self.committing -= up.size
            up.tmp.unlink(missing_ok=True)
        if not dedup:
            self.total += up.size
        log.info("artifact_stored", task_id=task_id, path=key, size=up.size, sha256=digest, deduplicated=dedup)

    async def _put_blob(self, conn: Any, up: _Upload, digest: str, key: str) -> bool:
        """Write the blob in the open transaction; True when it was stored already."""
        cur = await conn.execute("SELECT 1 FROM artifact_blobs WHERE sha256 = %s", (digest,))
        if await cur.fetchone() is not None:
            return True
        if self.max_bytes:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CAP_LOCK,))
            cur = await conn.execute("SELECT coalesce(sum(size), 0) FROM artifact_blobs")
            total = int((await cur.fetchone())[0])
            self.total = total
            if total + up.size > self.max_bytes:
                log.error("artifact_store_full", path=key, size=up.size, total=total, cap=self.max_bytes)
                raise UploadError(
                    f"artifact store full: storing {key!r} ({up.size} bytes) would exceed "
                    f"artifact_store_max_bytes={self.max_bytes} ({total} bytes stored in the database); "
                    "raise the setting or remove old artifacts; upload discarded",
                    "RESOURCE_EXHAUSTED",
                )
        chunks = max(1, -(-up.size // CHUNK))
        cur = await conn.execute(
            "INSERT INTO artifact_blobs (sha256, size, chunks, created_ms) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
            (digest, up.size, chunks, now_ms()),
        )
        if await cur.fetchone() is None:  # another daemon stored the same bytes meanwhile
            return True
        with up.tmp.open("rb") as f:
            for n in range(chunks):
                await conn.execute(
                    "INSERT INTO artifact_chunks (sha256, n, data) VALUES (%s, %s, %s)", (digest, n, f.read(CHUNK))
                )
        return False


class DbBlob:
    """A blob in the database, served a few chunks per query (ArtifactReader)."""

    def __init__(self, owner: DbArtifactStore, sha256: str, size: int) -> None:
        self.owner = owner
        self.sha256 = sha256
        self.size = size

    async def stream(self, size: int) -> AsyncGenerator[bytes, None]:
        h = hashlib.sha256()
        n = got = 0
        while got < self.size:
            rows = await self.owner._query(
                f"read blob {self.sha256[:16]}",
                "SELECT n, data FROM artifact_chunks WHERE sha256 = %s AND n >= %s ORDER BY n LIMIT %s",
                (self.sha256, n, WINDOW),
            )
            if not rows:
                break
            for rn, data in rows:
                if rn != n:
                    break
                data = bytes(data)
                h.update(data)
                got += len(data)
                n += 1
                if got >= self.size:
                    self._check(got, h)  # before the last piece goes out
                for i in range(0, len(data), size):
                    yield data[i : i + size]
            if rows[-1][0] != n - 1:
                break
        self._check(got, h)
        yield b""

    def _check(self, got: int, h: Any) -> None:
        if got != self.size or h.hexdigest() != self.sha256:
            log.error("artifact_blob_damaged", sha256=self.sha256, size=self.size, read=got)
            raise ArtifactError(
                f"blob {self.sha256[:16]}... in the database is damaged ({got} of {self.size} bytes, "
                "or not the recorded sha256)",
                "DATA_LOSS",
            )
