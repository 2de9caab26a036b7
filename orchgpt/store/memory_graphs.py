"""Graphs for the in-memory store (the contract of sqlite_graphs.py)."""

from __future__ import annotations

from dataclasses import replace

from ..graphs.records import GraphRecord
from ..models import now_ms


class MemoryGraphs:
    def __init__(self) -> None:
        self._graphs: dict[str, list[tuple[GraphRecord, bool]]] = {}  # id -> [(version, deleted)]

    def save_graph(self, graph_id: str, owner: str, name: str, definition: str) -> tuple[GraphRecord, bool]:
        versions = self._graphs.setdefault(graph_id, [])
        if versions and not versions[-1][1] and versions[-1][0].definition == definition:
            return replace(versions[-1][0], versions=len(versions)), False
        rec = GraphRecord(graph_id, len(versions) + 1, owner, name, definition, now_ms(), len(versions) + 1)
        versions.append((rec, False))
        return replace(rec), True

    def graph_owner(self, graph_id: str) -> str | None:
        versions = self._graphs.get(graph_id)
        return versions[-1][0].owner if versions else None

    def get_graph(self, graph_id: str, version: int = 0) -> GraphRecord | None:
        versions = self._graphs.get(graph_id, [])
        for rec, deleted in reversed(versions):
            if not deleted and (not version or rec.version == version):
                return replace(rec, versions=len(versions))
        return None

    def list_graphs(self, owner: str | None = None, limit: int = 200) -> list[GraphRecord]:
        latest = [
            replace(v[-1][0], versions=len(v))
            for v in self._graphs.values()
            if v and not v[-1][1] and (owner is None or v[-1][0].owner == owner)
        ]
        return sorted(latest, key=lambda r: -r.created_ms)[:limit]

    def delete_graph(self, graph_id: str) -> int:
        versions = self._graphs.get(graph_id, [])
        live = sum(1 for _, d in versions if not d)
        self._graphs[graph_id] = [(r, True) for r, _ in versions]
        return live
