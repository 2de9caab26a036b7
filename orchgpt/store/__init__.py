"""Durable state of the mesh. `open_store` picks the implementation from a URL."""

from __future__ import annotations

import re

from ..errors import StoreError
from .base import Store
from .memory import MemoryStore

__all__ = ["SUPPORTED", "MemoryStore", "Store", "open_store", "redact_url"]

SUPPORTED = ("sqlite:///PATH (or a plain PATH)", "postgresql://USER@HOST:PORT/DB (or postgres://)", "memory:")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # 2+ characters: not a drive letter


def redact_url(url: str) -> str:
    """The URL with its password (``user:PASSWORD@``, ``password=...``) replaced by ``***``."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url, flags=re.IGNORECASE)


def open_store(url: str, commit_window_ms: float = 0.0) -> Store:
    """A store from its URL: ``memory:`` (throwaway), ``sqlite:///PATH`` (as SQLAlchemy:
    ``sqlite:////ABSOLUTE/PATH``), ``sqlite:PATH`` or a plain ``PATH`` (SQLite),
    ``postgresql://...`` / ``postgres://...`` (PostgreSQL).

    ``commit_window_ms``: group commit (SQLite: store/group_commit.py; PostgreSQL:
    store/pg_group.py); 0: a commit per write.

    Any other scheme raises StoreError listing the supported ones (nothing is created).
    """
    if url in ("memory", "memory:", ":memory:"):
        return MemoryStore()
    m = _SCHEME.match(url)
    scheme = m.group(1).lower() if m else ""
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, commit_window_ms=commit_window_ms)
    if scheme == "sqlite":
        path = url[len("sqlite:") :]
        if path.startswith("//"):  # as SQLAlchemy: sqlite:///PATH, so sqlite:////ABS/PATH
            if not path.startswith("///"):
                raise StoreError(
                    f"store URL {redact_url(url)!r}: a SQLite URL has no host; supported: {', '.join(SUPPORTED)}"
                )
            path = path[3:]
    elif scheme:
        raise StoreError(
            f"store URL {redact_url(url)!r}: unknown scheme {scheme + ':'!r}; supported: {', '.join(SUPPORTED)}"
        )
    else:
        path = url
    from .sqlite import SqliteStore  # the durable default (issue 6)

    return SqliteStore(path, commit_window_ms=commit_window_ms)
