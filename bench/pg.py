"""A throwaway PostgreSQL server for the benchmark (the tasks_pg phase), and its CPU time.

The server is the tests' one (tests/support/postgres.py: Debian's ``initdb`` + ``pg_ctl`` in a
temp dir on a free loopback port, every step with a timeout), started here with fsync on:
the benchmark measures real commits, as the SQLite and RabbitMQ rows do. ``python -m bench.run``
runs from the repository's root, where ``tests.support`` is importable.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench import procstat


def unavailable() -> str:
    """Why no PostgreSQL server can be started here ('' when it can)."""
    try:
        from tests.support import postgres
    except ImportError as exc:  # not run from the repository's root
        return f"tests/support/postgres.py is not importable ({exc}); run from the repository's root"
    return postgres.unavailable()


async def start() -> Any:
    """A started server (``tests.support.postgres.PostgresServer``) with fsync on; stop it with ``stop``."""
    from tests.support.postgres import PostgresServer

    server = PostgresServer(fsync=True)
    try:
        await asyncio.wait_for(asyncio.to_thread(server.start), 240)
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise
    return server


async def stop(server: Any) -> None:
    await asyncio.wait_for(asyncio.to_thread(server.stop), 90)


def _ppid(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def server_pids(server: Any) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    try:
        master = int((Path(server.data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if _ppid(int(p.name)) == master:
                pids.append(int(p.name))
        except (OSError, ValueError):
            continue
    return pids


def cpu_seconds(server: Any) -> dict[int, float]:
    """CPU seconds used so far by each of the server's processes."""
    out: dict[int, float] = {}
    for pid in server_pids(server):
        try:
            out[pid] = procstat.cpu_seconds(pid)
        except OSError:
            continue
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two ``cpu_seconds`` samples (a process gone since is not counted)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())
