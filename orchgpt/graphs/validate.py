"""Validation before anything runs: unknown blocks, pins that do not exist, required inputs
without a value, type mismatches along links, cycles. Each problem names the node and pin.

``catalog``: block id -> its catalog entry (``input_schema``, ``output_schema``: JSON Schema),
as `python -m agentd.blocks list --json` prints it (catalog.py)."""

from __future__ import annotations

from typing import Any

from .model import Graph, GraphError, Link
from .pins import split

Catalog = dict[str, dict[str, Any]]


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str] | None:
    """The JSON types a schema allows; None: any."""
    if "$ref" in schema:
        ref = str(schema["$ref"]).rsplit("/", 1)[-1]
        schema = root.get("$defs", {}).get(ref, {})
    if "type" in schema:
        t = schema["type"]
        out = set(t) if isinstance(t, list) else {t}
    elif "anyOf" in schema or "oneOf" in schema:
        out = set()
        for sub in schema.get("anyOf", schema.get("oneOf", [])):
            st = _types(sub, root)
            if st is None:
                return None
            out |= st
    elif "enum" in schema or "const" in schema:
        vals = schema.get("enum", [schema.get("const")])
        out = {_json_type(v) for v in vals}
    else:
        return None
    if "integer" in out:
        out.add("number")
    return out


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(v), "any")


def _pin_schema(entry: dict[str, Any], side: str, pin: str) -> dict[str, Any] | None:
    schema = entry.get(f"{side}_schema", {})
    props: dict[str, Any] = schema.get("properties", {})
    if side == "output" and pin == "error":
        return {"type": "string"}
    p = props.get(pin)
    return p if isinstance(p, dict) else None


def _check_pin(g: Graph, catalog: Catalog, node: str, address: str, side: str, where: str) -> dict[str, Any]:
    if node not in g.nodes:
        raise GraphError(f"{where}: no node {node!r} in the graph")
    n = g.nodes[node]
    name, _ = split(address)
    entry = catalog[n.block_id]
    schema = _pin_schema(entry, side, name)
    if schema is None:
        pins = ", ".join(entry.get(f"{side}_schema", {}).get("properties", {})) or "none"
        raise GraphError(f"{where}: node {node!r} (block {n.block_id}) has no {side} pin {name!r} ({side}s: {pins})")
    return schema


def _cycle(g: Graph) -> list[str] | None:
    succ: dict[str, list[str]] = {n: [] for n in g.nodes}
    for x in g.links:
        if not x.loop:
            succ[x.source].append(x.sink)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in succ[n]:
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in g.nodes:
        if n not in state and (found := visit(n)):
            return found
    return None


def validate(g: Graph, catalog: Catalog) -> None:
    """Raise GraphError for the first problem found (nodes in file order)."""
    for n in g.nodes.values():
        if n.block_id not in catalog:
            raise GraphError(f"node {n.id!r}: unknown block {n.block_id!r}")
        props = catalog[n.block_id].get("input_schema", {}).get("properties", {})
        for pin in n.input:
            if pin not in props:
                raise GraphError(
                    f"node {n.id!r}: input pin {pin!r}: block {n.block_id} has no such "
                    f"input (inputs: {', '.join(props) or 'none'})"
                )
    for x in g.links:
        _link_types(g, catalog, x)
    fed: dict[str, set[str]] = {n: set(g.nodes[n].input) for n in g.nodes}
    for x in g.links:
        if not x.loop:  # a loop link feeds the later iterations only
            fed[x.sink].add(split(x.sink_pin)[0])
    for i in g.inputs:
        _check_pin(g, catalog, i.sink, i.sink_pin, "input", f"graph input {i.name!r}")
        fed[i.sink].add(split(i.sink_pin)[0])
    for name, (node, pin) in g.outputs.items():
        _check_pin(g, catalog, node, pin, "output", f"graph output {name!r}")
    for n in g.nodes.values():
        required = catalog[n.block_id].get("input_schema", {}).get("required", [])
        for pin in required:
            if pin not in fed[n.id]:
                raise GraphError(
                    f"node {n.id!r}: required input pin {pin!r} has no value (no constant, link or graph input)"
                )
    cyc = _cycle(g)
    if cyc:
        raise GraphError(
            f"nodes {' -> '.join(cyc)} form a cycle that is not a declared loop "
            '(mark the link that goes back "loop": true, or iterate over items with a '
            "loop.items node)"
        )
    for x in g.links:
        if x.loop and x.source not in downstream(g, x.sink):
            raise GraphError(
                f"link {x}: declared a loop, but node {x.sink!r} does not lead to node "
                f"{x.source!r} (a loop link goes back to an earlier node)"
            )


def downstream(g: Graph, start: str) -> set[str]:
    """``start`` and every node it leads to along the links that are not loops."""
    seen = {start}
    todo = [start]
    while todo:
        n = todo.pop()
        for x in g.links:
            if not x.loop and x.source == n and x.sink not in seen:
                seen.add(x.sink)
                todo.append(x.sink)
    return seen


def _link_types(g: Graph, catalog: Catalog, x: Link) -> None:
    where = f"link {x}"
    src = _check_pin(g, catalog, x.source, x.source_pin, "output", where)
    dst = _check_pin(g, catalog, x.sink, x.sink_pin, "input", where)
    if x.source == x.sink and not x.loop:
        raise GraphError(f"{where}: node {x.source!r} is linked to itself (a cycle that is not a declared loop)")
    if split(x.source_pin)[1] or split(x.sink_pin)[1]:
        return  # a part of a value: its type is not declared
    s_root = catalog[g.nodes[x.source].block_id]["output_schema"]
    d_root = catalog[g.nodes[x.sink].block_id]["input_schema"]
    st, dt = _types(src, s_root), _types(dst, d_root)
    if st is None or dt is None or st & dt:
        return
    raise GraphError(
        f"{where}: type mismatch: output pin {x.source_pin!r} of node {x.source!r} "
        f"is {'/'.join(sorted(st))}, input pin {x.sink_pin!r} of node {x.sink!r} "
        f"expects {'/'.join(sorted(dt))}"
    )
