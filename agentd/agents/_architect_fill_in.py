"""The architect's fill-in path, for models that cannot use the file tools.

The bundled gemma-3-270m is a *base* model: it cannot emit tool calls and it
echoes instructions back instead of following them, but it continues a
pattern well. So the document is asked for one section at a time, each as a
short few-shot exchange without tools (``Components of a chat server:`` ->
two example bullets, two more examples, ``Components of a fastapi app:``), at most
`MAX_TOKENS` tokens at temperature 0.2, and the answer is parsed line by line:

* the leading block of lines in the section's form is kept (a model that goes
  on rambling or repeating itself is cut off there; duplicates are dropped);
* a line that repeats a line of the prompt (a question or an example, also
  barely changed or with junk after it) is dropped, and so is an item named
  after the examples' subject matter ('photo store', '/chats'), so an echoed
  prompt never counts as an answer;
* too few usable lines (components: 2 bullets ``name: what it does``; data
  model: 1 bullet ``Entity: fields``; endpoints: 1 ``METHOD /path``) and the
  section is asked again, at most `TRIES` times in all (sampled again, then
  with the examples in another order; the endpoints for the next entity);
  then `FillInFailed` names the section and the reason.

    filled = await fill_in_document(llm, ctx, "fastapi app")   # FillInFailed when a section fails
    ws.write_text("ARCHITECTURE.md", filled.markdown(diagram="architecture.mmd"))
    src = mermaid_from(parse_components(components_body), parse_endpoints(endpoints_body))

The text of every section is the model's; the architect only formats it (the
endpoints become a table) and writes a provenance note as the overview. The
diagram is *derived*, deterministically, from the components and endpoints of
the document (`mermaid_from`, `dot_from`): one node per component, the client
(implied by the HTTP endpoints, or a component that is one) to the components
that serve the API, those to the storage and the other components.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Generic, TypeVar

from ..errors import LLMError, TaskFailed
from ..runtime import TaskContext

MAX_TOKENS = 200
TEMPERATURE = 0.2
TRIES = 3  # per section
ECHO_SIMILARITY = 0.85  # a line holding this much of a line of the prompt is a copy of it


class FillInFailed(TaskFailed):
    """A section could not be filled in from the model's answers; the message names it."""


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


_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,2}[.)])\s+(.*\S)\s*$")
_SEP = re.compile(r"\s*(?::|\s[-\u2013\u2014]\s)\s*")
_ENDPOINT_LINE = re.compile(
    r"^\s*(?:[-*+]\s+|\d{1,2}[.)]\s+)?\|?\s*[*`]*(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)[*`]*\s*\|?\s*`?"
    r"(/[\w\-./{}:<>]*)`?\s*(.*)$"
)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_STORAGE = re.compile(
    r"\b(stores?|storage|db|databases?|sql\w*|sqlite|postgres\w*|mysql|mongo\w*|redis|cache|caches|"
    r"repository|repo|persistence|files?|bucket|s3)\b", re.I)
_API = re.compile(
    r"\b(api|apis|server|gateway|backend|app|application|service|router|routes?|web|http|rest|"
    r"endpoints?|handlers?|controllers?)\b", re.I)
_CLIENT = re.compile(r"\b(clients?|browser|frontend|front-end|ui|cli)$", re.I)  # "web ui", "fastapi client"


def _strip_md(s: str) -> str:
    return s.strip().strip("*_`").strip()


def _clean(line: str) -> str:
    """A model's line without a trailing run of non-ASCII junk (what a base model emits at the
    end of its turn, e.g. 'stores the data łę') when the rest of the line is ASCII."""
    m = re.match(r"^([\x00-\x7f]*?[A-Za-z)\]][\x00-\x7f]*?)\s*[^\x00-\x7f]+[\S]*\s*$", line)
    return m.group(1).rstrip() if m else line.rstrip()


def _cell(s: str) -> str:
    return s.replace("|", "/").strip()


def _name_and_rest(body: str) -> tuple[str, str] | None:
    parts = _SEP.split(body, maxsplit=1)
    if len(parts) != 2:
        return None
    name, rest = _strip_md(parts[0]), parts[1].strip()
    if not re.search(r"[A-Za-z]", name) or len(name) > 60 or len(name.split()) > 6:
        return None
    if not re.search(r"[A-Za-z]", rest):
        return None
    return name, rest


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
    m = _BULLET.match(_clean(line))
    if not m:
        return None
    got = _name_and_rest(m.group(1))
    if got is None:
        return None
    name, desc = got
    return Component(name, desc, classify(name, desc))


def parse_entity(line: str) -> Entity | None:
    m = _BULLET.match(_clean(line))
    if not m:
        return None
    body = m.group(1)
    got = _name_and_rest(body)
    if got is None and "(" in body:  # "- Todo (id, title)"
        name, _, rest = body.partition("(")
        got = (_strip_md(name), "(" + rest) if re.search(r"[A-Za-z]", name) and len(name) <= 60 else None
    if got is None:
        return None
    name, fields = got
    if len(name.split()) > 4:
        return None
    # A trailing word after the last field's type is end-of-turn junk: "(datetime) mendatang".
    fields = re.sub(r"^(.*\))\s+[A-Za-z]+$", r"\1", fields)
    return Entity(name, fields)


def parse_endpoint(line: str) -> Endpoint | None:
    m = _ENDPOINT_LINE.match(_clean(line))
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
                name = _strip_md(h.group(1))
                comp = Component(name, "", classify(name, ""))
            elif row and not _TABLE_RULE.match(line) and _strip_md(row.group(1)).lower() not in ("component", "name"):
                name, desc = _strip_md(row.group(1)), row.group(2).strip()
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


# ---------------------------------------------------------------- the section prompts
T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[T]):
    title: str
    question: str  # "{subject}" is the project (or, for the endpoints, an entity)
    examples: tuple[tuple[str, str], ...]  # (subject, answer)
    parse: Callable[[str], T | None]
    key: Callable[[T], Any]
    minimum: int
    form: str  # what a usable line looks like, for the failure message
    cap: int = 6
    # Order of the examples on each try (rotation): a retry first samples the same prompt again.
    # With gemma-3-270m the order matters (two examples, data model: chat-then-photo 3 of 4 good,
    # photo-then-chat 1 of 4); with three examples in this order 10 of 10 were good.
    orders: tuple[int, ...] = (0, 0, 1)

    def ident(self, item: T) -> str:
        """What names the item (component or entity name, endpoint path)."""
        k = self.key(item)
        return str(k[-1] if isinstance(k, tuple) else k)

    def messages(self, subject: str, attempt: int) -> list[dict[str, str]]:
        """The few-shot exchange: the examples (rotated as `orders` says), then the question."""
        k = self.orders[attempt % len(self.orders)] % len(self.examples)
        examples = self.examples[k:] + self.examples[:k]
        msgs: list[dict[str, str]] = []
        for ex_subject, answer in examples:
            msgs += [{"role": "user", "content": self.question.format(subject=ex_subject)},
                     {"role": "assistant", "content": answer}]
        msgs.append({"role": "user", "content": self.question.format(subject=subject)})
        return msgs


COMPONENTS: Section[Component] = Section(
    "Components", "Components of {subject}:",
    (("a chat server", "- chat gateway: accepts the chat connections\n- chat store: keeps the messages"),
     ("a photo gallery", "- photo uploader: receives the photos\n- photo store: keeps the image files"),
     ("a recipe site", "- recipe web: shows the recipe pages\n- recipe search: finds recipes by ingredient")),
    parse_component, lambda c: c.name.lower(), 2, "bullets 'name: what it does'")
DATA_MODEL: Section[Entity] = Section(
    "Data model", "Data model of {subject}:",
    (("a chat server", "- Chat: id (int), title (str), created_at (datetime)"),
     ("a photo gallery", "- Photo: id (int), caption (str), taken_at (datetime)"),
     ("a recipe site", "- Recipe: id (int), name (str), steps (list[str])")),
    parse_entity, lambda e: e.name.lower(), 1, "bullets 'Entity: field (type), ...'", cap=5)
ENDPOINTS: Section[Endpoint] = Section(
    "Endpoints", "HTTP endpoints for the entity {subject}:",
    (("Chat", "GET /chats - list the chats\nPOST /chats - start a chat"),
     ("Photo", "GET /photos - list the photos\nPOST /photos - upload a photo"),
     ("Recipe", "GET /recipes - list the recipes\nGET /recipes/{id} - one recipe")),
    parse_endpoint, lambda e: (e.method, e.path), 1, "lines 'METHOD /path - what it does'", cap=8)


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9/{}]+", " ", s.lower()).strip()


def _prompt_lines(messages: Sequence[dict[str, str]]) -> list[str]:
    return [n for m in messages for ln in m["content"].splitlines() if len(n := _norm(ln)) >= 8]


_STOP = {"a", "an", "the", "of", "my", "our", "for", "with", "and", "to", "in"}
# The subject matter of the examples: an item named after it (unless the question is about it)
# copies an example ('- photo store: ...', 'GET /chat' for a fastapi app).
EXAMPLE_DOMAIN = frozenset({"chat", "photo", "gallery", "galleries", "image", "caption", "uploader", "recipe",
                            "ingredient"})


def _stems(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z]+", text.lower())}


def _is_echo(line: str, prompt: list[str], own_words: set[str]) -> bool:
    """A line of the prompt, or one of its examples barely changed ('GET /chat - list the chats'):
    nearly the same text, without a word of the question's subject that the examples lack."""
    n = _norm(line)
    if len(n) < 8:
        return False
    if any(n.startswith(p) or p.startswith(n) for p in prompt):
        return True
    if own_words & set(n.replace("/", " ").split()):
        return False  # the pattern applied to this subject ('- fastapi store: ...'), not a copy
    return any(_covers(p, n) for p in prompt)


def _covers(p: str, n: str) -> bool:
    """Whether n is nearly prompt line p: nearly the same text, or nearly all of p with
    end-of-turn junk after it."""
    if len(n) > len(p) * 1.6:
        return False
    matched = sum(b.size for b in SequenceMatcher(None, n, p, autojunk=False).get_matching_blocks())
    return matched / len(p) >= ECHO_SIMILARITY or 2 * matched / (len(n) + len(p)) >= ECHO_SIMILARITY


@dataclass
class Answer(Generic[T]):
    items: list[T] = field(default_factory=list)
    echoed: int = 0  # lines dropped as repeats of the prompt
    problem: str = ""


def read_answer(section: Section[T], text: str, messages: Sequence[dict[str, str]]) -> Answer[T]:
    """The usable lines of a model's answer for one section; see the module doc."""
    prompt = _prompt_lines(messages)
    examples = {w for m in messages[:-1] for w in _norm(m["content"]).replace("/", " ").split()}
    own = {w for w in _norm(messages[-1]["content"]).split() if w not in _STOP} - examples
    borrowed = set(EXAMPLE_DOMAIN) - _stems(messages[-1]["content"])
    ans: Answer[T] = Answer()
    seen: set[Any] = set()
    for line in text.splitlines()[:40]:
        if not line.strip():
            continue
        if _is_echo(line, prompt, own):
            ans.echoed += 1
            continue
        item = section.parse(line)
        if item is None:
            if ans.items:
                break  # the block of usable lines has ended: what follows is rambling
            continue
        if _stems(section.ident(item)) & borrowed:  # named after the examples ('photo store', '/chats')
            ans.echoed += 1
            continue
        k = section.key(item)
        if k not in seen:
            seen.add(k)
            ans.items.append(item)
        if len(ans.items) >= section.cap:
            break
    if len(ans.items) < section.minimum:
        if not text.strip():
            ans.problem = "the answer was empty"
        elif not ans.items and ans.echoed:
            ans.problem = (f"the answer repeated the prompt or its examples ({ans.echoed} line(s)) "
                           "instead of answering")
        else:
            ans.problem = (f"{len(ans.items)} usable line(s), at least {section.minimum} needed "
                           f"({section.form})")
    return ans


# ---------------------------------------------------------------- asking the model
@dataclass
class FilledDocument:
    project: str
    model: str
    components: list[Component]
    entities: list[Entity]
    endpoints: list[Endpoint]

    def markdown(self, diagram: str) -> str:
        """ARCHITECTURE.md: the model's sections, with a provenance note as the overview."""
        return "\n".join([
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
        ])


def subject_of(project: str) -> str:
    """'fastapi app' -> 'a fastapi app': the project as the examples phrase theirs."""
    first = project.split()[0].lower() if project.split() else ""
    if first in ("a", "an", "the", "my", "our"):
        return project
    return ("an " if project[:1].lower() in "aeiou" else "a ") + project


def entity_subject(name: str) -> str:
    """The entity as the examples write theirs ('Photo'). With gemma-3-270m this decides the answer:
    'Fastapi' 9 times in 9 gave its own endpoints, 'fastapi' 0 of 4 and 'FastAPI' 0 of 4 (it copied
    the examples); 'TodoItem' 4 of 4."""
    if re.search(r"[A-Z]{2}", name):  # an acronym inside: FastAPI -> Fastapi
        return name.capitalize()
    return name[:1].upper() + name[1:]


async def ask_section(llm: Any, ctx: TaskContext, section: Section[T], subjects: Sequence[str],
                      tries: int = TRIES) -> tuple[list[T], str]:
    """The section's items from the model (and the model's name); FillInFailed after ``tries`` answers.

    ``subjects``: what to ask about on each try (the last one is repeated).
    """
    problem = ""
    for attempt in range(tries):
        subject = subjects[min(attempt, len(subjects) - 1)]
        messages = section.messages(subject, attempt)
        ctx.step(f"fill-in: asking for the {section.title} of {subject} (try {attempt + 1} of {tries})",
                 phase="fill_in", section=section.title)
        try:
            res = await llm.chat(messages, model="smart", max_tokens=MAX_TOKENS, temperature=TEMPERATURE,
                                 on_token=ctx.token)
        except LLMError as exc:
            raise TaskFailed(f"the model server failed: {exc}") from exc
        ctx.add_usage(res.usage)
        ans = read_answer(section, res.content, messages)
        if not ans.problem:
            ctx.step(f"fill-in: {section.title}: {len(ans.items)} line(s) from the model"
                     + (f" ({ans.echoed} echoed line(s) dropped)" if ans.echoed else ""),
                     phase="fill_in", section=section.title, ok="true")
            return ans.items, res.usage.model
        problem = ans.problem
        ctx.step(f"fill-in: the {section.title} answer is unusable: {problem}",
                 phase="fill_in", section=section.title, ok="false")
    raise FillInFailed(f"the model could not fill in the {section.title} section "
                       f"({tries} tries; last: {problem})")


async def fill_in_document(llm: Any, ctx: TaskContext, project: str) -> FilledDocument:
    """Components, data model and endpoints of ``project`` from the model, one section at a time."""
    subject = subject_of(project)
    components, model = await ask_section(llm, ctx, COMPONENTS, [subject])
    entities, _ = await ask_section(llm, ctx, DATA_MODEL, [subject])
    names = list(dict.fromkeys(entity_subject(e.name) for e in entities[:2]))
    endpoints, _ = await ask_section(llm, ctx, ENDPOINTS, names)
    return FilledDocument(project, model, components, entities, endpoints)


# ---------------------------------------------------------------- the derived diagram
_RESERVED = {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click", "direction",
             "default", "linkstyle", "node", "edge", "digraph", "strict", "client"}


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
        rest = [i for i, c in zip(ids, comps, strict=True) if c.kind == "other"] or \
               [i for i, c in zip(ids, comps, strict=True) if c.kind != "client"]
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
