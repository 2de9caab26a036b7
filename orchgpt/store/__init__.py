"""Durable state of the mesh. `open_store` picks the implementation from a URL."""

from __future__ import annotations

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store", "open_store"]


def open_store(url: str) -> Store:
    """``memory:`` for a throwaway store, otherwise a SQLite file path (``sqlite:PATH`` or ``PATH``)."""
    if url in ("memory", "memory:", ":memory:"):
        return MemoryStore()
    from .sqlite import SqliteStore  # the durable default (issue 6)

    path = url.removeprefix("sqlite:")
    return SqliteStore(path)
