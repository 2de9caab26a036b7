"""A real daemon on a real PostgreSQL server whose database stops taking writes: the
PostgreSQL side of test_state_safety.py's SQLite-only cases (a store that cannot be written
refuses work with UNAVAILABLE, the health check says NOT_SERVING, and the daemon serves
again once the database is writable, without a restart)."""

from __future__ import annotations

import pytest

from orchgpt.errors import ClientError
from orchgpt.models import Action, Command
from tests.support.mesh import Daemon, await_for
from tests.test_state_safety import NOT_SERVING, SERVING, health, run_task

pytestmark = pytest.mark.timeout(90)


def _admin(url: str, sql: str) -> None:
    """Run ``sql`` on the server's maintenance database (not the daemon's: that one may be read-only)."""
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(sql)


def _drop_daemon_sessions(url: str) -> None:
    """The daemon's connections end (it reconnects, with the database's current settings)."""
    db = url.rsplit("/", 1)[1]
    _admin(
        url,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()",
    )


async def _serving(d: Daemon) -> bool:
    return await health(d) == SERVING


async def test_a_read_only_database_refuses_work_and_recovers(daemon_factory, postgres_url: str) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--store", postgres_url).start()
    db = postgres_url.rsplit("/", 1)[1]
    async with d.client() as c:
        one = await run_task(c, Command("echo", Action.RUN, "one"))
        assert one[-1].result is not None and one[-1].result.output == "one"
        _admin(postgres_url, f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        _drop_daemon_sessions(postgres_url)
        with pytest.raises(ClientError) as ei:  # the call that finds the connection gone fails
            await run_task(c, Command("echo", Action.RUN, "two"))
        assert ei.value.code == "UNAVAILABLE" and "cannot be written" in str(ei.value), ei.value
        with pytest.raises(ClientError) as ei:  # the next one reconnects: the database refuses the write
            await run_task(c, Command("echo", Action.RUN, "two again"))
        assert ei.value.code == "UNAVAILABLE"
        assert "cannot be written" in str(ei.value) and "read-only" in str(ei.value), ei.value
        assert await health(d) == NOT_SERVING
        _admin(postgres_url, f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        _drop_daemon_sessions(postgres_url)
        await await_for(lambda: _serving(d), timeout=15, what="health SERVING once writable again")
        three = await run_task(c, Command("echo", Action.RUN, "three"))
        assert three[-1].result is not None and three[-1].result.output == "three"
