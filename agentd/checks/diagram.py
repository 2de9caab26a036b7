"""The architect's diagram against its document: every component the document names is a node
of the diagram, and every node of the diagram is a component of the document (or the client).

The diagram is parsed, not trusted: Mermaid flowcharts (``id["Label"]``, ``id[(Label)]``, bare
ids on edges), Mermaid sequence diagrams (``participant``/``actor``) and Graphviz (``id
[label="..."]``, bare ids on edges). Names match when their letters and digits agree, or one
holds the other ("Todo API" and "api"), so the model's spelling of an id does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchgpt.checks import FAILED, PASSED, SKIPPED, Check

TOOL = "agentd diagram parser"
IMPLIED = {"client", "user", "users", "browser", "webclient", "enduser"}
_KEYWORDS = {
    "flowchart",
    "graph",
    "subgraph",
    "end",
    "style",
    "classdef",
    "class",
    "click",
    "linkstyle",
    "direction",
    "digraph",
    "strict",
    "node",
    "edge",
    "rankdir",
    "lr",
    "rl",
    "td",
    "tb",
    "bt",
    "sequencediagram",
    "participant",
    "actor",
    "note",
    "loop",
    "alt",
    "else",
    "opt",
    "par",
}
_MM_NODE = re.compile(r"\b([A-Za-z_][\w-]*)\s*(?:\[\[|\[\(|\(\[|\(\(|\[/|\[\\|\[|\(|\{\{|\{|>)\s*\"?([^\"\]\)\}]*)")
_MM_ARROW = re.compile(r"\s*(?:-->|---|-\.->|-\.-|==>|===|--[ox]|<-->|~~~)\s*")
_MM_EDGE_LABEL = re.compile(r"\|[^|]*\||--\s[^-]*?-->")
_MM_PARTICIPANT = re.compile(r"^\s*(?:participant|actor)\s+(\S+)(?:\s+as\s+(.+))?$", re.M)
_DOT_NODE = re.compile(r"\b(\w+)\s*\[[^\]]*?\blabel\s*=\s*\"([^\"]*)\"")
_DOT_EDGE = re.compile(r"\"?(\w+)\"?\s*-[->]\s*\"?(\w+)\"?")


def key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class Node:
    ident: str
    label: str

    def keys(self) -> set[str]:
        return {k for k in (key(self.ident), key(self.label)) if k}


def mermaid_nodes(src: str) -> list[Node]:
    nodes: dict[str, Node] = {}
    for m in _MM_PARTICIPANT.finditer(src):
        nodes.setdefault(m.group(1), Node(m.group(1), (m.group(2) or "").strip()))
    for raw in src.splitlines()[1:]:
        line = raw.split("%%", 1)[0].strip()
        if not line or line.split()[0].lower() in _KEYWORDS:
            continue
        for m in _MM_NODE.finditer(line):
            nodes[m.group(1)] = Node(m.group(1), m.group(2).strip())
        bare = _MM_EDGE_LABEL.sub(" ", re.sub(r"[\[\(\{>][^\]\)\}]*[\]\)\}]+", "", line))
        parts = [p.strip() for p in _MM_ARROW.split(bare)]
        if len(parts) > 1:
            for p in parts:
                if re.fullmatch(r"[A-Za-z_][\w-]*", p):
                    nodes.setdefault(p, Node(p, ""))
    return [n for n in nodes.values() if n.ident.lower() not in _KEYWORDS]


def dot_nodes(src: str) -> list[Node]:
    body = re.sub(r"//[^\n]*|#[^\n]*|/\*.*?\*/", "", src, flags=re.S)
    nodes = {m.group(1): Node(m.group(1), m.group(2)) for m in _DOT_NODE.finditer(body)}
    for m in _DOT_EDGE.finditer(body):
        for ident in m.groups():
            nodes.setdefault(ident, Node(ident, ""))
    return [n for n in nodes.values() if n.ident.lower() not in _KEYWORDS]


def _matches(component: str, node: Node) -> bool:
    c = key(component)
    return bool(c) and any(k == c or (min(len(k), len(c)) >= 3 and (k in c or c in k)) for k in node.keys())


def component_match(components: Sequence[str], nodes: Sequence[Node]) -> tuple[list[str], list[str]]:
    """(components missing from the diagram, diagram nodes that are no component)."""
    missing = [c for c in components if not any(_matches(c, n) for n in nodes)]
    extra = [
        n.label or n.ident for n in nodes if not any(_matches(c, n) for c in components) and not (n.keys() & IMPLIED)
    ]
    return missing, extra


def diagram_check(diagram: str, src: str, components: Sequence[str]) -> tuple[Check, list[str]]:
    """The components check, and the problems to give back to the model."""
    nodes = dot_nodes(src) if diagram.endswith(".dot") else mermaid_nodes(src)
    if not components:
        return Check("components", TOOL, SKIPPED, "the document names no components"), []
    if not nodes:
        return Check("components", TOOL, SKIPPED, f"no nodes could be read from {diagram}"), []
    missing, extra = component_match(components, nodes)
    problems = [f"{diagram} has no node for the component {c!r} of the document" for c in missing]
    problems += [f"{diagram} draws {x!r}, which is not a component of the document" for x in extra]
    if problems:
        return Check("components", TOOL, FAILED, "; ".join(problems)), problems
    detail = f"{len(components)} component(s) of the document are the {len(nodes)} node(s) of {diagram}"
    return Check("components", TOOL, PASSED, detail), []
