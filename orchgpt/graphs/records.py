"""A stored graph version (what the store keeps and the RPCs return)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GraphRecord:
    graph_id: str
    version: int
    owner: str
    name: str
    definition: str  # the canonical JSON (model.Graph.canonical)
    created_ms: int = 0
    versions: int = 1  # how many versions the graph has (list and get fill it)
