"""The store a test daemon writes: its --store URL, else its data dir's SQLite file."""

from __future__ import annotations

from orchgpt.store import Store, open_store
from tests.support import postgres
from tests.support.mesh import Daemon


def daemon_store(d: Daemon) -> Store:
    """Open the store of ``d`` (for a test to read what the daemon wrote, or to seed it before
    the daemon starts)."""
    if d.store_url:
        return open_store(d.store_url)
    if "--store" in d.args:  # not started yet: the URL it will be given
        return open_store(d.args[d.args.index("--store") + 1])
    if postgres.wanted():  # not started yet: the database it will be given (mesh.py Daemon.start)
        return open_store(postgres.database_for(d.data_dir))
    return open_store(str(d.data_dir / "orchgpt.db"))
