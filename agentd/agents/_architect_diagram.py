"""The architecture diagram derived from the document: deterministically, from its components
and endpoints (`mermaid_from`, `dot_from`). One node per component, the client (implied by the
HTTP endpoints, or a component that is one) to the components that serve the API, those to
the storage and the other components.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ._architect_sections import Component, Endpoint

_RESERVED = {
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "style",
    "class",
    "classdef",
    "click",
    "direction",
    "default",
    "linkstyle",
    "node",
    "edge",
    "digraph",
    "strict",
    "client",
}


def _ids(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        base = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "component"
        if base in _RESERVED or base[0].isdigit():
            base = "c_" + base
        ident, n = base, 2
        while ident in out:
            ident, n = f"{base}_{n}", n + 1
        out.append(ident)
    return out


def _label(s: str) -> str:
    """Text for a quoted Mermaid / Graphviz label: no quotes, pipes, backslashes or entity codes."""
    return re.sub(r"[\"|\\`#;]", "", s).strip()[:60] or "component"


@dataclass
class _Graph:
    nodes: list[tuple[str, str, str]]  # (id, label, kind)
    edges: list[tuple[str, str, str]]  # (from, to, label)


def derive_graph(components: Sequence[Component], endpoints: Sequence[Endpoint]) -> _Graph:
    """Nodes and edges implied by the components and endpoints (see the module doc)."""
    comps = list(components)
    ids = _ids([c.name for c in comps])
    nodes = [(i, _label(c.name), c.kind) for i, c in zip(ids, comps, strict=True)]
    clients = [i for i, c in zip(ids, comps, strict=True) if c.kind == "client"]
    if not clients:
        nodes.insert(0, ("client", "Client", "client"))
        clients = ["client"]
    servers = [i for i, c in zip(ids, comps, strict=True) if c.kind == "api"]
    if not servers:  # the first component that is neither client nor storage takes the requests
        rest = [i for i, c in zip(ids, comps, strict=True) if c.kind == "other"] or [
            i for i, c in zip(ids, comps, strict=True) if c.kind != "client"
        ]
        servers = rest[:1]
    calls = ", ".join(f"{e.method} {e.path}" for e in endpoints[:3]) + (", ..." if len(endpoints) > 3 else "")
    edges = [(cl, sv, _label(calls) if calls else "") for cl in clients for sv in servers]
    for sv in servers:
        for i, c in zip(ids, comps, strict=True):
            if i not in servers and c.kind != "client":
                edges.append((sv, i, ""))
    return _Graph(nodes, edges)


def mermaid_from(components: Sequence[Component], endpoints: Sequence[Endpoint]) -> str:
    g = derive_graph(components, endpoints)
    shape = {"client": '(["{}"])', "storage": '[("{}")]', "api": '["{}"]', "other": '["{}"]'}
    lines = ["flowchart LR"]
    lines += [f"    {i}{shape[k].format(label)}" for i, label, k in g.nodes]
    lines += [f'    {a} -->|"{label}"| {b}' if label else f"    {a} --> {b}" for a, b, label in g.edges]
    return "\n".join(lines) + "\n"


def dot_from(components: Sequence[Component], endpoints: Sequence[Endpoint]) -> str:
    g = derive_graph(components, endpoints)
    shape = {"client": "oval", "storage": "cylinder", "api": "box", "other": "box"}
    lines = ["digraph architecture {", "    rankdir=LR;"]
    lines += [f'    {i} [label="{label}", shape={shape[k]}];' for i, label, k in g.nodes]
    lines += [f'    {a} -> {b} [label="{label}"];' if label else f"    {a} -> {b};" for a, b, label in g.edges]
    return "\n".join(lines) + "\n}\n"
