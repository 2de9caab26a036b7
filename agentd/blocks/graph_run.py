"""The graph runner: each node execution a delegated sub-task, a node running when all its
linked inputs are ready, independent nodes in parallel.

- A block node runs on the ``blocks`` agent type; an ``agent`` block node is routed straight
  to the agent type it names (its input validated here first), a ``workflow`` block node to
  the ``workflow`` agent type (option ``workflow``: the daemon fills in the definition).
- The sub-task's key is ``node:ID`` (``node:ID#i`` for the i-th run of a fanned-out node,
  ``node:ID@k`` in the k-th repeat of a declared loop), so
  its id derives from the run's task id and the node (orchgpt.models.child_task_id): a graph run
  resumed after a crash gets the completed nodes' results back instead of running them again.
- A pin yielded several times (loop.items' ``item``) runs the linked nodes once per value (a
  declared loop); their outputs are gathered in order. A linked pin that yielded nothing (the
  branch a condition did not take) skips its node and every node after it.
- A link declared ``"loop": true`` goes back to an earlier node: when the whole graph has run
  and the loop's source yielded on that pin, its sink and every node after it run again with
  the value (their outputs replaced), until no loop yields, or the graph's ``max_iterations``
  is reached (the run fails).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

from orchgpt.graphs.model import Graph, GraphError, Link, Node
from orchgpt.graphs.pins import PinError, get_part, set_part, split
from orchgpt.graphs.validate import downstream
from orchgpt.models import Action, Delegation, TaskResult, TaskState

from .base import BlockError, validate_input
from .library.agent import AgentBlock, outputs_of
from .library.workflow import WorkflowBlock, workflow_outputs

NODE_TIMEOUT_S = 1800.0


@dataclass
class NodeState:
    node: Node
    state: str = "waiting"  # waiting | running | completed | failed | skipped
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    epoch: int = 0  # times it completed (a loop fires once per completion of its source)

    def reset(self) -> None:
        """Before another iteration of a declared loop (its earlier runs stay on record)."""
        self.state, self.outputs, self.error, self.done = "waiting", {}, "", asyncio.Event()

    def summary(self) -> dict[str, Any]:
        return {
            "node": self.node.id,
            "block": self.node.block_id,
            "state": self.state,
            "error": self.error,
            "runs": self.runs,
        }


def graph_inputs(g: Graph, given: dict[str, Any]) -> dict[str, Any]:
    """The graph's input values by name; GraphError for a missing or unknown one."""
    names = {i.name for i in g.inputs}
    unknown = sorted(set(given) - names)
    if unknown:
        raise GraphError(
            f"graph input {unknown[0]!r}: the graph has no such input (inputs: {', '.join(sorted(names)) or 'none'})"
        )
    out: dict[str, Any] = {}
    for i in g.inputs:
        if i.name in given:
            out[i.name] = given[i.name]
        elif i.required:
            raise GraphError(f"graph input {i.name!r} is required (it feeds {i.sink}.{i.sink_pin})")
        else:
            out[i.name] = i.default
    return out


class GraphRun:
    def __init__(
        self,
        g: Graph,
        given: dict[str, Any],
        delegate: Any,
        step: Any,
        node_timeout: float = NODE_TIMEOUT_S,
    ) -> None:
        self.g = g
        self.values = graph_inputs(g, given)
        self.delegate = delegate  # TaskContext.delegate
        self.step = step  # TaskContext.step
        self.node_timeout = node_timeout
        self.nodes = {n: NodeState(node) for n, node in g.nodes.items()}
        self.into: dict[str, list[Link]] = {n: [] for n in g.nodes}
        for x in g.links:
            if not x.loop:
                self.into[x.sink].append(x)
        self.loops = [x for x in g.links if x.loop]
        self.fired: dict[Link, int] = {}  # loop link -> its source's epoch it last fired from
        self.iteration = 0
        self.fed_back: dict[str, list[tuple[str, Any]]] = {}  # loop sink -> (pin, value)
        self.loop_error = ""

    async def run(self) -> dict[str, Any]:
        """Run every node; the graph's outputs by name (a value, a list when several, None)."""
        await asyncio.gather(*(self._node(s) for s in self.nodes.values()))
        while not self.failed and (feeds := self._loop_feeds()):
            if self.iteration + 1 >= self.g.max_iterations:
                self.loop_error = (
                    f"the loop {feeds[0][0]} still goes on after {self.g.max_iterations} "
                    "iterations (the graph's max_iterations)"
                )
                break
            self.iteration += 1
            self.fed_back = {}
            for x, value in feeds:
                self.fed_back.setdefault(x.sink, []).append((x.sink_pin, value))
            again = sorted(set().union(*(downstream(self.g, x.sink) for x, _ in feeds)))
            for n in again:
                self.nodes[n].reset()
            self.step(
                f"loop: iteration {self.iteration + 1} runs {', '.join(again)}",
                iteration=str(self.iteration + 1),
            )
            await asyncio.gather(*(self._node(self.nodes[n]) for n in again))
        out: dict[str, Any] = {}
        for name, (node, pin) in self.g.outputs.items():
            vals = self._values(node, pin)
            out[name] = None if not vals else vals[0] if len(vals) == 1 else vals
        return out

    @property
    def failed(self) -> list[NodeState]:
        return [s for s in self.nodes.values() if s.state == "failed"]

    def _loop_feeds(self) -> list[tuple[Link, Any]]:
        """The loop links whose source completed again and yielded on the looping pin."""
        feeds: list[tuple[Link, Any]] = []
        for x in self.loops:
            src = self.nodes[x.source]
            if src.state == "completed" and self.fired.get(x, 0) < src.epoch:
                self.fired[x] = src.epoch
                vals = self._values(x.source, x.source_pin)
                if vals:
                    feeds.append((x, vals[-1]))
        return feeds

    def _values(self, node: str, address: str) -> list[Any]:
        name, path = split(address)
        return [get_part(v, path) for v in self.nodes[node].outputs.get(name, [])]

    async def _node(self, s: NodeState) -> None:
        try:
            for x in self.into[s.node.id]:
                await self.nodes[x.source].done.wait()
            blocked = [x for x in self.into[s.node.id] if self.nodes[x.source].state != "completed"]
            if blocked:
                s.state = "skipped"
                s.error = f"{blocked[0].source} {self.nodes[blocked[0].source].state}"
                return
            try:
                runs = self._inputs(s.node)
            except (PinError, GraphError) as exc:
                s.state, s.error = "failed", f"node {s.node.id!r}: {exc}"
                return
            if runs is None:
                s.state, s.error = "skipped", "a linked output yielded nothing (a branch not taken)"
                self.step(f"{s.node.id}: skipped ({s.error})", node=s.node.id, state="skipped")
                return
            s.state = "running"
            first = len(s.runs)
            base = f"node:{s.node.id}" + (f"@{self.iteration}" if self.iteration else "")
            keys = [base] if len(runs) == 1 else [f"{base}#{i}" for i in range(len(runs))]
            results = await asyncio.gather(*(self._execute(s, k, inp) for k, inp in zip(keys, runs, strict=True)))
            for yields in results:
                for pin, value in yields:
                    s.outputs.setdefault(pin, []).append(value)
            bad = [r for r in s.runs[first:] if r["state"] != "completed"]
            if bad:
                s.state, s.error = (
                    "failed",
                    f"node {s.node.id!r} ({s.node.block_id}): {bad[0]['error']}",
                )
            else:
                s.state = "completed"
                s.epoch += 1
        finally:
            s.done.set()

    def _inputs(self, n: Node) -> list[dict[str, Any]] | None:
        """The node's inputs for each of its runs (None: a linked pin yielded nothing)."""
        base = copy.deepcopy(n.input)
        for i in self.g.inputs:
            if i.sink == n.id:
                set_part(base, i.sink_pin, copy.deepcopy(self.values[i.name]))
        for pin, value in self.fed_back.get(n.id, []):  # a declared loop's value, this iteration
            set_part(base, pin, copy.deepcopy(value))
        linked = [(x, self._values(x.source, x.source_pin)) for x in self.into[n.id]]
        if any(not vals for _, vals in linked):
            return None
        counts = {len(vals) for _, vals in linked if len(vals) > 1}
        if len(counts) > 1:
            raise GraphError(
                f"its inputs fan out {sorted(counts)} times: every multi-valued link "
                "into one node must carry as many values"
            )
        runs = []
        for k in range(counts.pop() if counts else 1):
            inputs = copy.deepcopy(base)
            for x, vals in linked:
                set_part(inputs, x.sink_pin, copy.deepcopy(vals[k] if len(vals) > 1 else vals[0]))
            runs.append(inputs)
        return runs

    async def _execute(self, s: NodeState, key: str, inputs: dict[str, Any]) -> list[tuple[str, Any]]:
        n = s.node
        run: dict[str, Any] = {
            "key": key,
            "inputs": inputs,
            "state": "queued",
            "task_id": "",
            "outputs": {},
            "error": "",
            "started_ms": int(time.time() * 1000),
        }
        s.runs.append(run)
        try:
            sub = self._delegation(n, key, inputs)
        except BlockError as exc:
            run.update(state="failed", error=str(exc), finished_ms=int(time.time() * 1000))
            return []
        run["state"] = "running"
        self.step(
            f"{n.id}: running {n.block_id} on {sub.agent_type}",
            node=n.id,
            block=n.block_id,
            state="running",
        )
        try:
            result = await asyncio.wait_for(self.delegate(sub), self.node_timeout)
        except TimeoutError:
            result = TaskResult("", TaskState.FAILED, error=f"no result after {self.node_timeout:g}s")
        except Exception as exc:  # not delegated (the link is down, refused): the node fails
            result = TaskResult("", TaskState.FAILED, error=f"not delegated: {exc}")
        yields = self._yields(n, result)
        ok = result.ok and not any(p == "error" for p, _ in yields)
        err = next((str(v) for p, v in yields if p == "error"), result.error)
        run.update(
            state="completed" if ok else "failed",
            task_id=result.task_id,
            error="" if ok else err,
            outputs={p: v for p, v in yields if p != "error"},
            finished_ms=int(time.time() * 1000),
        )
        self.step(
            f"{n.id}: {run['state']}" + (f": {err}" if not ok else ""),
            node=n.id,
            block=n.block_id,
            state=run["state"],
            task=result.task_id,
        )
        return yields if ok else []

    def _delegation(self, n: Node, key: str, inputs: dict[str, Any]) -> Delegation:
        opts = {"graph_node": n.id, "block_id": n.block_id}
        if n.block_id == AgentBlock.id:
            m: Any = validate_input(AgentBlock, inputs)
            return Delegation(
                m.agent_type,
                m.input,
                language=m.language,
                action=Action(m.action),
                options={**m.options, "graph_node": n.id},
                key=key,
            )
        if n.block_id == WorkflowBlock.id:  # routed to the workflow agent type
            return WorkflowBlock.delegation(validate_input(WorkflowBlock, inputs), key, n.id)
        return Delegation("blocks", json.dumps(inputs, default=str), action=Action.RUN, options=opts, key=key)

    @staticmethod
    def _yields(n: Node, result: TaskResult) -> list[tuple[str, Any]]:
        if n.block_id == AgentBlock.id:
            return outputs_of(result)
        if n.block_id == WorkflowBlock.id:
            return workflow_outputs(result)
        if not result.ok:
            return [("error", result.error or str(result.state))]
        try:
            return [(str(p), v) for p, v in json.loads(result.data.get("yields", "[]"))]
        except (ValueError, TypeError) as exc:
            return [("error", f"the blocks agent's outputs are not readable: {exc}")]
