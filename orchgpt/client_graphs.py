"""The graph RPCs on the client side (MeshClient inherits them)."""

from __future__ import annotations

import json
from typing import Any

from .graphs.records import GraphRecord
from .iac.v1 import iac_pb2 as pb


def _record(g: pb.GraphInfo) -> GraphRecord:
    return GraphRecord(g.graph_id, g.version, g.owner, g.name, g.definition_json, g.created_ms, g.versions)


class GraphClient:
    _stub: Any

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any: ...

    async def create_graph(self, definition: str, fmt: str = "", graph_id: str = "") -> tuple[GraphRecord, bool]:
        """Save a graph (validated by the daemon): (its version, whether it is new)."""
        r = await self._unary(
            self._stub.CreateGraph,
            pb.CreateGraphRequest(definition=definition, format=fmt, graph_id=graph_id),
            timeout=90,  # the first call asks the agent program for the block catalog
        )
        return _record(r.graph), bool(r.created)

    async def list_graphs(self, limit: int = 200) -> list[GraphRecord]:
        r = await self._unary(self._stub.ListGraphs, pb.ListGraphsRequest(limit=limit))
        return [_record(g) for g in r.graphs]

    async def get_graph(self, graph_id: str, version: int = 0) -> GraphRecord:
        return _record(await self._unary(self._stub.GetGraph, pb.GetGraphRequest(graph_id=graph_id, version=version)))

    async def delete_graph(self, graph_id: str) -> int:
        r = await self._unary(self._stub.DeleteGraph, pb.DeleteGraphRequest(graph_id=graph_id))
        return int(r.versions_deleted)

    async def list_blocks(self) -> list[dict[str, Any]]:
        """Every block: id, name, description, categories, input_schema, output_schema."""
        r = await self._unary(self._stub.ListBlocks, pb.ListBlocksRequest(), timeout=90)
        return [
            {
                "id": b.id,
                "name": b.name,
                "description": b.description,
                "categories": list(b.categories),
                "input_schema": json.loads(b.input_schema_json or "{}"),
                "output_schema": json.loads(b.output_schema_json or "{}"),
            }
            for b in r.blocks
        ]
