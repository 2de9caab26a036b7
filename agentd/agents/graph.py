"""graph: runs a graph of blocks (docs/graphs.md).

Submitted as ``Command("graph", RUN, input=<the graph's inputs as JSON>, options={"graph_id":
ID})``; the daemon puts the stored definition in option ``graph`` and its version in
``graph_version`` (orchgpt/graphs/submit.py). The graph is validated against this host's blocks,
then each node execution is delegated (agentd/blocks/graph_run.py). The output is the graph's
outputs as JSON; ``data["nodes"]`` records every node execution (inputs, outputs, state, times).
"""

from __future__ import annotations

import json

from orchgpt.graphs.model import GraphError, parse_graph
from orchgpt.graphs.validate import validate

from ..blocks import catalog
from ..blocks.graph_run import GraphRun
from ..errors import TaskFailed
from ..runtime import Agent, Outcome, TaskContext, register


@register
class GraphAgent(Agent):
    type = "graph"
    capabilities = ("graph",)
    description = "runs a graph of blocks, each node a sub-task routed through the mesh"
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        opts = ctx.task.options
        gid, version = opts.get("graph_id", ""), opts.get("graph_version", "")
        if not opts.get("graph"):
            raise TaskFailed(f"graph {gid or '?'}: no definition (submit it with option graph_id)")
        try:
            g = parse_graph(opts["graph"], "json")
            validate(g, {e["id"]: e for e in catalog()})
            given = json.loads(ctx.task.input or "{}")
            if not isinstance(given, dict):
                raise GraphError("the graph's input must be a JSON object of its inputs by name")
            run = GraphRun(g, given, ctx.delegate, ctx.step)
        except (GraphError, ValueError) as exc:
            raise TaskFailed(f"graph {gid} v{version}: {exc}") from None
        ctx.status(f"running graph {g.name} ({gid} v{version}): {len(g.nodes)} nodes")
        outputs = await run.run()
        data = {
            "graph_id": gid,
            "graph_version": version,
            "graph_name": g.name,
            "nodes": json.dumps([s.summary() for s in run.nodes.values()], default=str),
            "outputs": json.dumps(outputs, default=str),
        }
        errors = [s.error for s in run.failed] + ([run.loop_error] if run.loop_error else [])
        if errors:
            return Outcome(
                ok=False,
                output=json.dumps(outputs, default=str),
                error="; ".join(errors),
                data=data,
            )
        return Outcome(output=json.dumps(outputs, default=str), data=data)
