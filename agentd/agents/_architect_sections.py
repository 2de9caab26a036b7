"""The architect's sections for the section-by-section fill-in (agentd.llm.strategies.fill_in),
for models that cannot use the file tools.

What the sections hold (`Component`, `Entity`, `Endpoint`), how a line of each
is parsed, the questions with their answers for the strategy's worked examples,
and the document assembled from the model's answers:

* components: at least 2 bullets ``name: what it does``;
* data model: at least 1 bullet ``Entity: fields``;
* endpoints: at least 1 ``METHOD /path``, asked for the first entity (then the next).

    filled = await fill_in_document(llm, ctx, "fastapi app", strategy)   # FillInFailed when a section fails
    ws.write_text("ARCHITECTURE.md", filled.markdown(diagram="architecture.mmd"))

The text of every section is the model's; the architect only formats it (the
endpoints become a table) and writes a provenance note as the overview; the
diagram is derived from it (`_architect_diagram`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..llm.strategies.fill_in import (
    BULLET,
    FillIn,
    FillInFailed,
    Section,
    clean,
    name_and_rest,
    strip_md,
)
from ..runtime import TaskContext

__all__ = [
    "COMPONENTS",
    "DATA_MODEL",
    "ENDPOINTS",
    "Component",
    "Endpoint",
    "Entity",
    "FillInFailed",
    "FilledDocument",
    "classify",
    "fill_in_document",
    "parse_components",
    "parse_endpoints",
]


# ---------------------------------------------------------------- what the sections hold
@dataclass(frozen=True)
class Component:
    name: str
    description: str
    kind: str = "other"  # "api" | "storage" | "client" | "other"

    def line(self) -> str:
        return f"- {self.name}: {self.description}"


@dataclass(frozen=True)
class Entity:
    name: str
    fields: str

    def line(self) -> str:
        return f"- {self.name}: {self.fields}"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    description: str = ""

    def row(self) -> str:
        return f"| {self.method} | {self.path} | {_cell(self.description) or '-'} |"


_ENDPOINT_LINE = re.compile(
    r"^\s*(?:[-*+]\s+|\d{1,2}[.)]\s+)?\|?\s*[*`]*(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)[*`]*\s*\|?\s*`?"
    r"(/[\w\-./{}:<>]*)`?\s*(.*)$"
)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_STORAGE = re.compile(
    r"\b(stores?|storage|db|databases?|sql\w*|sqlite|postgres\w*|mysql|mongo\w*|redis|cache|caches|"
    r"repository|repo|persistence|files?|bucket|s3)\b",
    re.I,
)
_API = re.compile(
    r"\b(api|apis|server|gateway|backend|app|application|service|router|routes?|web|http|rest|"
    r"endpoints?|handlers?|controllers?)\b",
    re.I,
)
_CLIENT = re.compile(r"\b(clients?|browser|frontend|front-end|ui|cli)$", re.I)  # "web ui", "fastapi client"


def _cell(s: str) -> str:
    return s.replace("|", "/").strip()


def classify(name: str, description: str) -> str:
    """The component's role in the diagram, from its name first, then its description."""
    if _CLIENT.search(name.strip()):
        return "client"
    if _STORAGE.search(name):
        return "storage"
    if _API.search(name):
        return "api"
    if _STORAGE.search(description) and not _API.search(description):
        return "storage"
    if _API.search(description):
        return "api"
    return "other"


def parse_component(line: str) -> Component | None:
    m = BULLET.match(clean(line))
    if not m:
        return None
    got = name_and_rest(m.group(1))
    if got is None:
        return None
    name, desc = got
    return Component(name, desc, classify(name, desc))


def parse_entity(line: str) -> Entity | None:
    m = BULLET.match(clean(line))
    if not m:
        return None
    body = m.group(1)
    got = name_and_rest(body)
    if got is None and "(" in body:  # "- Todo (id, title)"
        name, _, rest = body.partition("(")
        got = (strip_md(name), "(" + rest) if re.search(r"[A-Za-z]", name) and len(name) <= 60 else None
    if got is None:
        return None
    name, fields = got
    if len(name.split()) > 4:
        return None
    # A trailing word after the last field's type is end-of-turn junk: "(datetime) mendatang".
    fields = re.sub(r"^(.*\))\s+[A-Za-z]+$", r"\1", fields)
    return Entity(name, fields)


def parse_endpoint(line: str) -> Endpoint | None:
    m = _ENDPOINT_LINE.match(clean(line))
    if not m:
        return None
    desc = re.sub(r"^[\s|:\-\u2013\u2014]+", "", m.group(3))
    desc = re.sub(r"\s*\|\s*", ", ", desc).strip(" ,")
    return Endpoint(m.group(1).upper(), m.group(2), desc)


def parse_components(body: str) -> list[Component]:
    """Components of a section body: bullets ``name: what it does``, ``### name`` headings, or table rows."""
    out: dict[str, Component] = {}
    for line in body.splitlines():
        comp = parse_component(line)
        if comp is None:
            h = re.match(r"^\s*#{3,6}\s+(.*\S)", line)
            row = re.match(r"^\s*\|([^|]+)\|([^|]*)", line)
            if h:
                name = strip_md(h.group(1))
                comp = Component(name, "", classify(name, ""))
            elif row and not _TABLE_RULE.match(line) and strip_md(row.group(1)).lower() not in ("component", "name"):
                name, desc = strip_md(row.group(1)), row.group(2).strip()
                comp = Component(name, desc, classify(name, desc)) if re.search(r"[A-Za-z]", name) else None
        if comp is not None:
            out.setdefault(comp.name.lower(), comp)
    return list(out.values())


def parse_endpoints(body: str) -> list[Endpoint]:
    out: dict[tuple[str, str], Endpoint] = {}
    for line in body.splitlines():
        ep = parse_endpoint(line)
        if ep is not None:
            out.setdefault((ep.method, ep.path), ep)
    return list(out.values())


# ---------------------------------------------------------------- the sections, with their worked examples
# One answer per example of agentd.llm.strategies.fill_in.WORKED_EXAMPLES (a chat server,
# a photo gallery, a recipe site; for the endpoints their entities Chat, Photo, Recipe).
COMPONENTS: Section[Component] = Section(
    "Components",
    "Components of {subject}:",
    (
        "- chat gateway: accepts the chat connections\n- chat store: keeps the messages",
        "- photo uploader: receives the photos\n- photo store: keeps the image files",
        "- recipe web: shows the recipe pages\n- recipe search: finds recipes by ingredient",
    ),
    parse_component,
    lambda c: c.name.lower(),
    2,
    "bullets 'name: what it does'",
)
DATA_MODEL: Section[Entity] = Section(
    "Data model",
    "Data model of {subject}:",
    (
        "- Chat: id (int), title (str), created_at (datetime)",
        "- Photo: id (int), caption (str), taken_at (datetime)",
        "- Recipe: id (int), name (str), steps (list[str])",
    ),
    parse_entity,
    lambda e: e.name.lower(),
    1,
    "bullets 'Entity: field (type), ...'",
    cap=5,
)
ENDPOINTS: Section[Endpoint] = Section(
    "Endpoints",
    "HTTP endpoints for the entity {subject}:",
    (
        "GET /chats - list the chats\nPOST /chats - start a chat",
        "GET /photos - list the photos\nPOST /photos - upload a photo",
        "GET /recipes - list the recipes\nGET /recipes/{id} - one recipe",
    ),
    parse_endpoint,
    lambda e: (e.method, e.path),
    1,
    "lines 'METHOD /path - what it does'",
    cap=8,
    about="entity",
)


# ---------------------------------------------------------------- the document
@dataclass
class FilledDocument:
    project: str
    model: str
    components: list[Component]
    entities: list[Entity]
    endpoints: list[Endpoint]

    def markdown(self, diagram: str) -> str:
        """ARCHITECTURE.md: the model's sections, with a provenance note as the overview."""
        return "\n".join(
            [
                f"# Architecture: {self.project}",
                "",
                "## Overview",
                f"This document was filled in section by section by the model ({self.model or 'unnamed'}), "
                "which could not write files with tools. The components, data model and endpoints are its "
                f"answers; the endpoints table and the diagram ({diagram}) are formatted from them by the "
                "architect agent, without adding design content.",
                "",
                "## Components",
                *(c.line() for c in self.components),
                "",
                "## Data model",
                *(e.line() for e in self.entities),
                "",
                "## Endpoints",
                "| Method | Path | Description |",
                "|---|---|---|",
                *(e.row() for e in self.endpoints),
                "",
            ]
        )


async def fill_in_document(llm: Any, ctx: TaskContext, project: str, strategy: FillIn | None = None) -> FilledDocument:
    """Components, data model and endpoints of ``project`` from the model, one section at a time."""
    s = strategy or FillIn()
    subject = s.subject_of(project)
    components, model = await s.ask(llm, ctx, COMPONENTS, [subject])
    entities, _ = await s.ask(llm, ctx, DATA_MODEL, [subject])
    names = list(dict.fromkeys(s.entity_subject(e.name) for e in entities[:2]))
    endpoints, _ = await s.ask(llm, ctx, ENDPOINTS, names)
    return FilledDocument(project, model, components, entities, endpoints)
