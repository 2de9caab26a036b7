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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """ORCHGPT_TEST_STORE=postgres: tests of the SQLite store's own file are skipped, with
    the reason their ``sqlite_only`` marker gives."""
    from tests.support.postgres import wanted

    if not wanted():
        return
    for item in items:
        m = item.get_closest_marker("sqlite_only")
        if m is not None:
            why = m.args[0] if m.args else "a test of the SQLite store"
            item.add_marker(pytest.mark.skip(reason=f"sqlite only: {why}"))


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A fresh mesh CA with server and CLI certificates, for this test only."""
    return make_certs(tmp_path / "certs")


@pytest.fixture
def daemon_factory(tmp_path: Path, certs: Path) -> Iterator[object]:
    """Build (not start) daemons sharing this test's CA; every one is stopped at teardown.

    ORCHGPT_TEST_STORE=postgres: every test daemon (tests/support/mesh.py Daemon) uses a
    fresh PostgreSQL database of the session's server, one per data dir, instead of its
    SQLite file (unless a test passes its own --store)."""
    made: list[Daemon] = []

    def make(*args: str, env: dict[str, str] | None = None, data_dir: Path | None = None) -> Daemon:
        d = Daemon(
            workdir=tmp_path, certs=certs, data_dir=data_dir or tmp_path / "data", args=list(args), env=env or {}
        )
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
    """A real PostgreSQL server for the whole session (tests/support/postgres.py); with
    ORCHGPT_TEST_STORE=postgres the one the test daemons use."""
    from tests.support import postgres

    why = postgres.unavailable()
    if why:
        pytest.skip(why)
    yield postgres.shared_server()


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres() -> Iterator[None]:
    """Stop the session's PostgreSQL server (if one was started) at the end."""
    yield
    from tests.support import postgres

    postgres.stop_shared()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL (with its password) of a fresh, empty database for this test."""
    return postgres_server.new_database()
