"""The graph RPCs (CreateGraph, ListGraphs, GetGraph, DeleteGraph, ListBlocks): protobuf here,
the decisions in orchgpt/graphs/service.py, who may call what in orchgpt/authz.py."""

from __future__ import annotations

import json
from typing import Any

import grpc

from . import authz
from .errors import OrchgptError
from .graphs.catalog import BlockCatalog
from .graphs.records import GraphRecord
from .graphs.service import GraphService
from .iac.v1 import iac_pb2 as pb
from .servicer_base import ServicerBase


def graph_to_pb(r: GraphRecord, with_definition: bool = True) -> pb.GraphInfo:
    return pb.GraphInfo(
        graph_id=r.graph_id,
        version=r.version,
        owner=r.owner,
        name=r.name,
        definition_json=r.definition if with_definition else "",
        created_ms=r.created_ms,
        versions=r.versions,
    )


def block_to_pb(e: dict[str, Any]) -> pb.BlockInfo:
    return pb.BlockInfo(
        id=str(e.get("id", "")),
        name=str(e.get("name", "")),
        description=str(e.get("description", "")),
        categories=[str(c) for c in e.get("categories", [])],
        input_schema_json=json.dumps(e.get("input_schema", {})),
        output_schema_json=json.dumps(e.get("output_schema", {})),
    )


class GraphRpcs(ServicerBase):
    _graph_service: GraphService | None = None

    @property
    def graphs(self) -> GraphService:
        if self._graph_service is None:
            self._graph_service = GraphService(self.mesh.store, BlockCatalog())
        return self._graph_service

    async def _fail(self, context: grpc.aio.ServicerContext, exc: OrchgptError) -> None:
        await self._abort_error(context, exc)  # orchgpt.status: the one mapping

    async def CreateGraph(
        self, request: pb.CreateGraphRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateGraphResponse:
        ident = await self._authorize(context, "CreateGraph")
        try:
            rec, created = await self.graphs.create(
                authz.owner_of(ident), request.definition, request.format, request.graph_id
            )
        except OrchgptError as exc:
            await self._fail(context, exc)
            raise
        return pb.CreateGraphResponse(graph=graph_to_pb(rec), created=created)

    async def ListGraphs(
        self, request: pb.ListGraphsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGraphsResponse:
        ident = await self._authorize(context, "ListGraphs")
        try:
            recs = self.graphs.list(authz.list_owner(ident, "ListGraphs"), request.limit)
        except OrchgptError as exc:
            await self._fail(context, exc)
            raise
        # without definitions (GetGraph has them): a listing stays small
        return pb.ListGraphsResponse(graphs=[graph_to_pb(r, with_definition=False) for r in recs])

    async def GetGraph(self, request: pb.GetGraphRequest, context: grpc.aio.ServicerContext) -> pb.GraphInfo:
        ident = await self._authorize(context, "GetGraph")
        try:
            rec = self.graphs.get(authz.list_owner(ident, "GetGraph"), request.graph_id, request.version)
        except OrchgptError as exc:
            await self._fail(context, exc)
            raise
        return graph_to_pb(rec)

    async def DeleteGraph(
        self, request: pb.DeleteGraphRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteGraphResponse:
        ident = await self._authorize(context, "DeleteGraph")
        try:
            n = self.graphs.delete(authz.list_owner(ident, "DeleteGraph"), request.graph_id)
        except OrchgptError as exc:
            await self._fail(context, exc)
            raise
        return pb.DeleteGraphResponse(versions_deleted=n)

    async def ListBlocks(
        self, request: pb.ListBlocksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBlocksResponse:
        await self._authorize(context, "ListBlocks")
        try:
            entries = await self.graphs.blocks()
        except OrchgptError as exc:
            await self._fail(context, exc)
            raise
        return pb.ListBlocksResponse(blocks=[block_to_pb(e) for e in entries])
