"""A graph run is an ordinary command: ``Command("graph", RUN, input=<the graph's inputs as
JSON>, options={"graph_id": ID[, "graph_version": N]})``. When the mesh accepts one it puts the
stored definition in the task's options (``graph``, ``graph_version``, ``graph_name``) so that the
graph agent runs exactly the version recorded with the task, resumed runs included."""

from __future__ import annotations

import json

from ..errors import RoutingError
from ..models import Action, Command
from ..store import Store

GRAPH_TYPE = "graph"


def graph_options(store: Store, cmd: Command, submitted_by: str) -> dict[str, str]:
    """The task's options: the command's, with the graph's definition for a graph run."""
    options = dict(cmd.options)
    if cmd.agent_type != GRAPH_TYPE or cmd.action not in (Action.CREATE, Action.RUN):
        return options
    gid = options.get("graph_id", "").strip()
    if not gid:
        raise RoutingError("a graph run needs option graph_id (the graph to run)", code="INVALID_ARGUMENT")
    raw_version = options.get("graph_version", "").strip() or "0"
    if not raw_version.isdigit():
        raise RoutingError(
            f"option graph_version: {raw_version!r} is not a version number",
            code="INVALID_ARGUMENT",
        )
    rec = store.get_graph(gid, int(raw_version))
    # someone else's graph is as absent as a graph that does not exist
    if rec is None or rec.owner != submitted_by:
        what = f"graph {gid!r}" + (f" version {raw_version}" if raw_version != "0" else "")
        raise RoutingError(f"{what} not found", code="NOT_FOUND")
    try:
        given = json.loads(cmd.input or "{}")
    except ValueError as exc:
        raise RoutingError(f"input: the graph's input is not JSON: {exc}", code="INVALID_ARGUMENT") from None
    if not isinstance(given, dict):
        raise RoutingError(
            "input: the graph's input must be a JSON object of its inputs by name",
            code="INVALID_ARGUMENT",
        )
    options.update(graph=rec.definition, graph_version=str(rec.version), graph_name=rec.name)
    return options
