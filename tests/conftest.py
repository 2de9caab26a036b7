"""Shared fixtures: a throwaway CA per test, real daemons, real agents."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import AgentProc, Daemon, make_certs

# A task state change outside models.TRANSITIONS raises (in this process and in the daemons
# the tests start), instead of the error log line it is in production.
os.environ.setdefault("ORCHGPT_STRICT_TRANSITIONS", "1")


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A fresh mesh CA with server and CLI certificates, for this test only."""
    return make_certs(tmp_path / "certs")


@pytest.fixture
def daemon_factory(tmp_path: Path, certs: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """Build (not start) daemons sharing this test's CA; every one is stopped at teardown.

    ORCHGPT_TEST_STORE=postgres: the daemons of a test share one fresh PostgreSQL database
    instead of their SQLite file (unless a test passes its own --store)."""
    made: list[Daemon] = []
    pg_url = ""

    def make(*args: str, env: dict[str, str] | None = None, data_dir: Path | None = None) -> Daemon:
        nonlocal pg_url
        if os.environ.get("ORCHGPT_TEST_STORE") == "postgres" and "--store" not in args:
            pg_url = pg_url or request.getfixturevalue("postgres_url")
            args = (*args, "--store", pg_url)
        d = Daemon(workdir=tmp_path, certs=certs, data_dir=data_dir or tmp_path / "data", args=list(args),
                   env=env or {})
        made.append(d)
        return d

    yield make
    for d in made:
        d.kill()


@pytest.fixture
def daemon(daemon_factory) -> Daemon:  # type: ignore[no-untyped-def]
    """A running orchgpt that spawns local agents on demand."""
    return daemon_factory().start()


@pytest.fixture
def agents() -> Iterator[list[AgentProc]]:
    """Collects hand-started agents so that they are stopped at teardown."""
    started: list[AgentProc] = []
    yield started
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(5)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A real PostgreSQL server for the whole session (tests/support/postgres.py)."""
    from tests.support.postgres import PostgresServer, unavailable

    why = unavailable()
    if why:
        pytest.skip(why)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL (with its password) of a fresh, empty database for this test."""
    return postgres_server.new_database()
