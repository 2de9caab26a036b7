"""The store a test daemon writes: its --store URL, else its data dir's SQLite file."""

from __future__ import annotations

from orchgpt.store import Store, open_store
from tests.support.mesh import Daemon


def daemon_store(d: Daemon) -> Store:
    """Open the store of ``d`` (for a test to read what the daemon wrote)."""
    if d.store_url:
        return open_store(d.store_url)
    return open_store(str(d.data_dir / "orchgpt.db"))
