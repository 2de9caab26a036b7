"""Graphs and their versions, for the SQLite and PostgreSQL stores (the same SQL).

Saving a definition that differs from the graph's latest version makes a new version; the same
definition again changes nothing. Deleting marks every version deleted (executions that name a
version keep their record; the graph can no longer be listed, shown or run)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..graphs.records import GraphRecord
from ..models import now_ms

_COLS = "graph_id, version, owner, name, definition, created_ms"


def _record(row: tuple[Any, ...], versions: int = 1) -> GraphRecord:
    return GraphRecord(str(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5]), versions)


class SqliteGraphs:
    if TYPE_CHECKING:  # provided by the store

        @contextmanager
        def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]: ...
        def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    def save_graph(self, graph_id: str, owner: str, name: str, definition: str) -> tuple[GraphRecord, bool]:
        """(the graph's version holding ``definition``, whether it is new)."""
        with self._tx(f"save graph {graph_id}") as c:
            row = c.execute(
                f"SELECT {_COLS}, deleted_ms FROM graphs WHERE graph_id = ? ORDER BY version DESC LIMIT 1",
                (graph_id,),
            ).fetchone()
            if row is not None and not row[6] and row[4] == definition:
                return _record(tuple(row), int(row[1])), False
            version = int(row[1]) + 1 if row is not None else 1
            rec = GraphRecord(graph_id, version, owner, name, definition, now_ms(), version)
            c.execute(
                f"INSERT INTO graphs ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                (graph_id, version, owner, name, definition, rec.created_ms),
            )
            return rec, True

    def graph_owner(self, graph_id: str) -> str | None:
        """The owner of a graph id ever saved (deleted or not); None: never saved."""
        rows = self._read(
            "graph owner",
            "SELECT owner FROM graphs WHERE graph_id = ? ORDER BY version DESC LIMIT 1",
            (graph_id,),
        )
        return str(rows[0][0]) if rows else None

    def get_graph(self, graph_id: str, version: int = 0) -> GraphRecord | None:
        """A live graph's version (0: the latest)."""
        rows = self._read(
            "get graph",
            f"SELECT {_COLS} FROM graphs WHERE graph_id = ? AND deleted_ms = 0 ORDER BY version DESC",
            (graph_id,),
        )
        for r in rows:
            if not version or int(r[1]) == version:
                return _record(r, int(rows[0][1]))
        return None

    def list_graphs(self, owner: str | None = None, limit: int = 200) -> list[GraphRecord]:
        """The latest version of every live graph (of ``owner``), newest first."""
        where = "deleted_ms = 0" + (" AND owner = ?" if owner is not None else "")
        params: tuple[Any, ...] = (owner,) if owner is not None else ()
        rows = self._read(
            "list graphs",
            f"SELECT {_COLS} FROM graphs g WHERE {where} AND version = "
            "(SELECT max(version) FROM graphs h WHERE h.graph_id = g.graph_id) "
            "ORDER BY created_ms DESC LIMIT ?",
            (*params, limit),
        )
        return [_record(r, int(r[1])) for r in rows]

    def delete_graph(self, graph_id: str) -> int:
        """Mark every version of the graph deleted; how many were live."""
        with self._tx(f"delete graph {graph_id}") as c:
            cur = c.execute(
                "UPDATE graphs SET deleted_ms = ? WHERE graph_id = ? AND deleted_ms = 0",
                (now_ms(), graph_id),
            )
            return int(cur.rowcount or 0)
