"""What the graph RPCs do, without the transport: create (validated, versioned), list, get,
delete, each scoped to an owner (None: an admin, everyone's). Errors are OrchgptErrors whose
code is the gRPC status: INVALID_ARGUMENT (a bad graph, naming node and pin), NOT_FOUND (no such
graph, or another owner's), ALREADY_EXISTS (a graph id another owner uses)."""

from __future__ import annotations

import re
from typing import Any

from .. import logs
from ..errors import ErrorCode, OrchgptError
from ..models import new_id
from ..store import Store
from .catalog import BlockCatalog
from .model import parse_graph
from .records import GraphRecord
from .validate import validate

log = logs.get("orchgpt.graphs")

GRAPH_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class GraphService:
    def __init__(self, store: Store, catalog: BlockCatalog) -> None:
        self.store = store
        self.catalog = catalog

    async def blocks(self) -> list[dict[str, Any]]:
        return await self.catalog.entries()

    async def create(self, owner: str, text: str, fmt: str = "", graph_id: str = "") -> tuple[GraphRecord, bool]:
        if fmt not in ("", "json", "toml"):
            raise OrchgptError(f"format: {fmt!r} is not json or toml", ErrorCode.INVALID_ARGUMENT)
        g = parse_graph(text, fmt)
        validate(g, await self.catalog.by_id())
        gid = graph_id or g.id or new_id()[:16]
        if not GRAPH_ID.match(gid):
            raise OrchgptError(
                f"graph_id: {gid!r} is not a graph id (1-64 letters, digits, '_', '.', ':' or '-')",
                ErrorCode.INVALID_ARGUMENT,
            )
        holder = self.store.graph_owner(gid)
        if holder is not None and holder != owner:
            raise OrchgptError(f"graph id {gid!r} is taken; choose another", ErrorCode.ALREADY_EXISTS)
        rec, created = self.store.save_graph(gid, owner, g.name, g.canonical())
        log.info(
            "graph_saved",
            graph_id=gid,
            version=rec.version,
            created=created,
            owner=owner,
            nodes=len(g.nodes),
        )
        return rec, created

    def list(self, owner: str | None, limit: int = 200) -> list[GraphRecord]:
        return self.store.list_graphs(owner, max(1, min(limit or 200, 1000)))

    def get(self, owner: str | None, graph_id: str, version: int = 0) -> GraphRecord:
        rec = self.store.get_graph(graph_id, max(0, version)) if graph_id else None
        if rec is None or (owner is not None and rec.owner != owner):
            what = f"graph {graph_id!r}" + (f" version {version}" if version else "")
            raise OrchgptError(f"{what} not found", ErrorCode.NOT_FOUND)
        return rec

    def delete(self, owner: str | None, graph_id: str) -> int:
        self.get(owner, graph_id)
        n = self.store.delete_graph(graph_id)
        log.info("graph_deleted", graph_id=graph_id, versions=n)
        return n
