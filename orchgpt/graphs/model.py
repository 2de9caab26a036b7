"""The graph model and its file format (JSON or TOML).

    {"name": "echo-pipeline",
     "inputs": {"who": {"to": "greet.values.who", "default": "world"}},
     "nodes": [{"id": "greet", "block": "text.template", "input": {"template": "hi {{who}}"}},
               {"id": "say", "block": "agent", "input": {"agent_type": "echo"}}],
     "links": [{"from": "greet.text", "to": "say.input"}],
     "outputs": {"said": "say.result"}}

A link joins ``NODE.PIN`` to ``NODE.PIN``; a pin may address a part of the value (pins.py).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorCode, OrchgptError
from .pins import PinError, split

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
MAX_NODES = 500
MAX_DEFINITION = 1_000_000  # bytes of a graph file
DEFAULT_ITERATIONS = 20
MAX_ITERATIONS = 1000


class GraphError(OrchgptError, ValueError):
    """A graph that cannot be used; the message names the node, the pin or the field."""

    code = ErrorCode.INVALID_ARGUMENT


@dataclass
class Node:
    id: str
    block_id: str
    input: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    source: str
    source_pin: str
    sink: str
    sink_pin: str
    loop: bool = False  # a declared loop: the link goes back to an earlier node (docs/graphs.md)

    def __str__(self) -> str:
        return f"{self.source}.{self.source_pin} -> {self.sink}.{self.sink_pin}"

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "from": f"{self.source}.{self.source_pin}",
            "to": f"{self.sink}.{self.sink_pin}",
        }
        if self.loop:
            d["loop"] = True
        return d


@dataclass(frozen=True)
class GraphInput:
    name: str
    sink: str
    sink_pin: str
    default: Any = None
    required: bool = True


@dataclass
class Graph:
    name: str
    nodes: dict[str, Node]
    links: list[Link] = field(default_factory=list)
    inputs: list[GraphInput] = field(default_factory=list)
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (node, pin)
    description: str = ""
    id: str = ""
    version: int = 0
    max_iterations: int = DEFAULT_ITERATIONS  # of a declared loop, before the run fails

    def definition(self) -> dict[str, Any]:
        """The graph in its file format (canonical: what is stored and compared)."""
        return {
            "name": self.name,
            "description": self.description,
            "nodes": [
                {"id": n.id, "block": n.block_id, "input": n.input, "metadata": n.metadata} for n in self.nodes.values()
            ],
            "links": [x.as_dict() for x in self.links],
            "inputs": {
                i.name: {
                    "to": f"{i.sink}.{i.sink_pin}",
                    "default": i.default,
                    "required": i.required,
                }
                for i in self.inputs
            },
            "outputs": {k: f"{n}.{p}" for k, (n, p) in self.outputs.items()},
        } | ({"max_iterations": self.max_iterations} if self.max_iterations != DEFAULT_ITERATIONS else {})

    def canonical(self) -> str:
        return json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))


def _endpoint(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, str) or "." not in value:
        raise GraphError(f"{where}: {value!r} is not NODE.PIN")
    node, pin = value.split(".", 1)
    try:
        split(pin)
    except PinError as exc:
        raise GraphError(f"{where}: {exc}") from None
    return node, pin


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GraphError(f"{where}: must be an object, not {type(value).__name__}")
    return value


def _link(raw: Any, i: int) -> Link:
    d = _obj(raw, f"links[{i}]")
    if "from" in d or "to" in d:
        (a, ap), (b, bp) = (
            _endpoint(d.get("from"), f"links[{i}].from"),
            _endpoint(d.get("to"), f"links[{i}].to"),
        )
    else:
        a, ap = str(d.get("source", "")), str(d.get("source_pin", ""))
        b, bp = str(d.get("sink", "")), str(d.get("sink_pin", ""))
        _endpoint(f"{a}.{ap}", f"links[{i}].source_pin")
        _endpoint(f"{b}.{bp}", f"links[{i}].sink_pin")
    loop = d.get("loop", False)
    if not isinstance(loop, bool):
        raise GraphError(f"links[{i}].loop: true or false, not {loop!r}")
    return Link(a, ap, b, bp, loop)


def from_dict(d: dict[str, Any]) -> Graph:
    """A graph from its parsed file; GraphError names what is wrong."""
    d = _obj(d, "graph")
    raw_nodes = d.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise GraphError("nodes: a graph needs a list of at least one node")
    if len(raw_nodes) > MAX_NODES:
        raise GraphError(f"nodes: at most {MAX_NODES} nodes, not {len(raw_nodes)}")
    nodes: dict[str, Node] = {}
    for i, raw in enumerate(raw_nodes):
        n = _obj(raw, f"nodes[{i}]")
        nid, block = n.get("id"), n.get("block", n.get("block_id"))
        if not isinstance(nid, str) or not NODE_ID.match(nid):
            raise GraphError(f"nodes[{i}].id: {nid!r} is not a node id (letters, digits, _ and -)")
        if nid in nodes:
            raise GraphError(f"node {nid!r}: the id is used twice")
        if not isinstance(block, str) or not block:
            raise GraphError(f"node {nid!r}: no block")
        nodes[nid] = Node(
            nid,
            block,
            dict(_obj(n.get("input", {}), f"node {nid!r}: input")),
            dict(_obj(n.get("metadata", {}), f"node {nid!r}: metadata")),
        )
    links = [_link(x, i) for i, x in enumerate(d.get("links") or [])]
    inputs: list[GraphInput] = []
    for name, spec in _obj(d.get("inputs") or {}, "inputs").items():
        s = spec if isinstance(spec, dict) else {"to": spec}
        node, pin = _endpoint(s.get("to"), f"inputs.{name}.to")
        inputs.append(GraphInput(name, node, pin, s.get("default"), bool(s.get("required", "default" not in s))))
    outputs: dict[str, tuple[str, str]] = {}
    for name, spec in _obj(d.get("outputs") or {}, "outputs").items():
        src = spec.get("from") if isinstance(spec, dict) else spec
        outputs[name] = _endpoint(src, f"outputs.{name}")
    iters = d.get("max_iterations", DEFAULT_ITERATIONS)
    if not isinstance(iters, int) or isinstance(iters, bool) or not 1 <= iters <= MAX_ITERATIONS:
        raise GraphError(f"max_iterations: a whole number from 1 to {MAX_ITERATIONS}, not {iters!r}")
    return Graph(
        max_iterations=iters,
        name=str(d.get("name") or "graph"),
        nodes=nodes,
        links=links,
        inputs=inputs,
        outputs=outputs,
        description=str(d.get("description") or ""),
        id=str(d.get("id") or ""),
    )


def parse_graph(text: str, fmt: str = "") -> Graph:
    """A graph from the text of a JSON or TOML file (``fmt``: "json", "toml" or "" to guess)."""
    if len(text.encode()) > MAX_DEFINITION:
        raise GraphError(f"the graph is larger than {MAX_DEFINITION} bytes")
    fmt = fmt or ("json" if text.lstrip().startswith("{") else "toml")
    try:
        data = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise GraphError(f"not a {fmt.upper()} graph: {exc}") from None
    return from_dict(data)
