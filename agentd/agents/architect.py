"""architect: an architecture document and a diagram, checked before they are handed on.

The model writes ``ARCHITECTURE.md`` (sections Components, Data model and
Endpoints) and ``architecture.mmd`` (Mermaid; or ``architecture.dot``,
Graphviz) with the file tools; a model that answers with the files in fenced
blocks instead is understood too. Both are then checked (required sections
present and filled, diagram of a known type whose brackets balance, with at
least one edge); problems go back to the model, at most ``tries`` rounds
(option ``tries``, default 3). The diagram is rendered to SVG in the sandbox
when ``mmdc`` or ``dot`` is installed. Both files (and the SVG) become artifacts.

A model that cannot use the tools (it answers in plain text without the
files, like the bundled gemma-3-270m) gets the strategy its profile names
(`agentd.llm.strategies`; the fill-in for every model unless configured
otherwise): the document is asked for section by section with short
few-shot prompts (the sections in `_architect_sections`) and assembled from
the model's answers, and the diagram is derived from the components and
endpoints it wrote (`_architect_diagram`: a deterministic transformation,
said so in a step event and in the result). A section the model cannot fill
in fails the task, naming the section.

Options: ``tries``, ``diagram`` (``mermaid`` | ``graphviz``).
"""

from __future__ import annotations

import json
import re
import shutil

from ..checks import FAILED, PASSED, SKIPPED, Check, attach
from ..checks.diagram import diagram_check
from ..llm.strategies import FillIn, for_profile
from ..loop import TOKEN_BUDGET, LoopResult
from ..runtime import Outcome, TaskContext, register
from ..sandbox import Limits, Sandbox, WeakSandboxRefused
from ..tools import FILE_TOOLS
from ..workspace import Workspace
from ._architect_diagram import dot_from, mermaid_from
from ._architect_sections import FillInFailed, fill_in_document, parse_components, parse_endpoints
from ._llm_agent import (
    LLMAgent,
    Session,
    fenced_blocks,
    project_context,
    record_artifacts,
)
from ._markdown import find_section, missing_sections, section_bodies

DOC = "ARCHITECTURE.md"
MERMAID = "architecture.mmd"
DOT = "architecture.dot"
SVG = "architecture.svg"
PUPPETEER = ".orchgpt/puppeteer.json"  # mmdc's browser settings (scratch, not an artifact)
REQUIRED_SECTIONS = {
    "Components": re.compile(r"\b(components?|services|modules)\b", re.I),
    "Data model": re.compile(r"\b(data\s*models?|schemas?|entities|models)\b", re.I),
    "Endpoints": re.compile(r"\b(endpoints?|apis?|routes)\b", re.I),
}
MERMAID_TYPES = (
    "graph",
    "flowchart",
    "sequenceDiagram",
    "classDiagram",
    "erDiagram",
    "stateDiagram",
    "stateDiagram-v2",
    "C4Context",
    "C4Container",
    "C4Component",
    "architecture-beta",
    "block-beta",
)
_ENDPOINT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\b\s*\|?\s*`?(/[^\s|`]*)")
_MERMAID_EDGE = re.compile(r"-->|---|-\.->|==>|--[^-\n]+-->|->>|-->>|\|\|--|}o--|\|o--|--o\{|--\|\{|<\|--|\.\.>")

SYSTEM = """You are the software architect of a team of agents. For the system the user asks for, write:

1. {doc}: a Markdown architecture document with these level-2 sections:
   ## Overview      - what the system does, in a few sentences
   ## Components    - a bullet per component: its name, responsibility and technology
   ## Data model    - each entity with its fields and types, and the relations
   ## Endpoints     - a Markdown table | Method | Path | Request | Response | Description |
                      with one row per HTTP endpoint (e.g. | GET | /todos | - | list of Todo | ... |)
2. {diagram}: a {diagram_kind} diagram of the components and how they talk to each other{diagram_hint}.

Write each file with the write_file tool (the whole file at once). The implementation
language is {language}. Keep the design concrete and small enough for one developer to build
and test. When both files are written, answer with one line that sums the design up."""


def check_document(doc: str) -> list[str]:
    """What is missing from an architecture document (empty: fine)."""
    problems = missing_sections(doc, DOC, REQUIRED_SECTIONS)
    if problems and problems[0].endswith("empty or nearly empty"):
        return problems
    sections = section_bodies(doc)
    eps = find_section(sections, REQUIRED_SECTIONS["Endpoints"])
    if eps is not None and not _ENDPOINT.search(eps[1]) and len(eps[1]) >= 10:
        problems.append(f"the '{eps[0]}' section of {DOC} lists no endpoint as METHOD /path (e.g. 'GET /todos')")
    return problems


def _balanced(text: str) -> str | None:
    """None when (), [] and {} balance outside quoted strings; else what is wrong."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        in_quote = False
        for ch in line:
            if ch == '"':
                in_quote = not in_quote
            elif in_quote:
                continue
            elif ch in "([{":
                stack.append((ch, lineno))
            elif ch in pairs:
                if not stack or stack[-1][0] != pairs[ch]:
                    return f"unmatched '{ch}' on line {lineno}"
                stack.pop()
    if stack:
        return f"'{stack[-1][0]}' opened on line {stack[-1][1]} is never closed"
    return None


def check_mermaid(src: str) -> list[str]:
    lines = [ln.strip() for ln in src.splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith("%%")]
    if body and body[0] == "---":  # front matter
        end = body.index("---", 1) if "---" in body[1:] else len(body)
        body = body[end + 1 :]
    if body and body[0].startswith("```"):
        return [f"{MERMAID} must hold the Mermaid source only, without the ``` fence"]
    if len(body) < 2:
        return [f"{MERMAID} is empty or has only one line"]
    kind = body[0].split()[0]
    if kind not in MERMAID_TYPES:
        return [f"{MERMAID} starts with {body[0]!r}: the first line must name the diagram type, e.g. 'flowchart LR'"]
    problems = []
    bad = _balanced("\n".join(body[1:]))
    if bad:
        problems.append(f"{MERMAID}: {bad}")
    if kind in ("graph", "flowchart") and not any(_MERMAID_EDGE.search(ln) for ln in body[1:]):
        problems.append(f"{MERMAID} has no edge between components (e.g. 'api --> db')")
    return problems


def check_dot(src: str) -> list[str]:
    s = re.sub(r"//[^\n]*|#[^\n]*|/\*.*?\*/", "", src, flags=re.S).strip()
    if not re.match(r"^(strict\s+)?(di)?graph\b[^{]*\{", s, re.I):
        return [f"{DOT} must start with 'digraph <name> {{'"]
    problems = []
    bad = _balanced(s)
    if bad:
        problems.append(f"{DOT}: {bad}")
    if "->" not in s and "--" not in s:
        problems.append(f"{DOT} has no edge between components")
    return problems


@register
class ArchitectAgent(LLMAgent):
    type = "architect"
    capabilities = ("architecture", "design", "diagram")
    description = "writes an architecture document (components, data model, endpoints) and a diagram"
    tools = FILE_TOOLS

    async def run(self, ctx: TaskContext) -> Outcome:
        opts = ctx.task.options
        tries = max(1, int(opts.get("tries", "3") or 3))
        graphviz = opts.get("diagram", "").lower() in ("graphviz", "dot")
        diagram = DOT if graphviz else MERMAID
        ws = Workspace(ctx.workspace)
        async with self.session(ctx) as s:
            messages = [
                {
                    "role": "system",
                    "content": SYSTEM.format(
                        doc=DOC,
                        diagram=diagram,
                        diagram_kind="Graphviz (dot)" if graphviz else "Mermaid",
                        diagram_hint=(
                            " ('digraph system { api -> db; }')"
                            if graphviz
                            else " (the file starts with 'flowchart LR'; no ``` fence)"
                        ),
                        language=ctx.task.language or "python",
                    ),
                },
                {"role": "user", "content": self._brief(ctx, ws)},
            ]
            problems: list[str] = []
            rounds = 0
            for attempt in range(1, tries + 1):
                ctx.status(f"designing (round {attempt} of {tries})")
                res = await s.loop.run(messages)
                rounds = attempt
                messages = res.messages
                self._take_from_answer(ctx, ws, res.content, diagram)
                problems = self._validate(ws)
                if not problems:
                    break
                ctx.step(
                    f"check: {len(problems)} problem(s): " + "; ".join(problems)[:300], check="architecture", ok="false"
                )
                if res.stopped == TOKEN_BUDGET or attempt == tries or self._no_tool_use(res, ws):
                    break
                messages.append(
                    {
                        "role": "user",
                        "content": (
                            "The architecture is not finished yet:\n- "
                            + "\n- ".join(problems)
                            + "\nFix these with write_file, then answer with one line."
                        ),
                    }
                )
            filled = derived = tried = False
            if problems and self._files_missing(ws):
                strategy = for_profile(await s.llm.profile())  # what to do for a model without tools
                tried = strategy is not None
                problems, filled, derived = await self._fill_in(s, ws, diagram, problems, strategy)
            written = [p for p in (DOC, MERMAID, DOT) if ws.exists(p)]
            if problems:
                record_artifacts(ctx, written)
                how = f"after {rounds} round(s)" + (" and the section-by-section fill-in" if tried else "")
                return Outcome(
                    ok=False,
                    error=f"the architecture is incomplete {how}: " + "; ".join(problems),
                    data={"problems": "\n".join(problems), "fill_in": str(tried).lower()},
                )
            ctx.step("check: document and diagram are complete", check="architecture", ok="true")
            rendered, render_note = await self._render(s, ws)
            checks = [
                Check("architecture", "agentd architect", PASSED, "document and diagram complete"),
                self._components(ws)[0],
                self._render_check(rendered, render_note),
            ]
            arts = record_artifacts(ctx, written + ([rendered] if rendered else []))
        doc = ws.read_text(DOC)
        sections = section_bodies(doc)
        comps = find_section(sections, REQUIRED_SECTIONS["Components"])
        n_comp = len(re.findall(r"^\s*(?:[-*+]|\d+\.)\s+|^#{3,}\s", comps[1], re.M)) if comps else 0
        n_ep = len({m.groups() for m in _ENDPOINT.finditer(doc)})
        dia = next(p for p in (MERMAID, DOT) if p in written)
        output = f"wrote {DOC} ({n_comp} components, {n_ep} endpoints)"
        if filled:
            output += " section by section (the model could not use the tools)"
        output += f" and derived {dia} from its components and endpoints" if derived else f" and {dia}"
        if rendered:
            output += f", rendered to {rendered}"
        data = {
            "document": DOC,
            "diagram": dia,
            "rendered": rendered or "",
            "components": str(n_comp),
            "endpoints": str(n_ep),
            "files": ", ".join(a.path for a in arts),
            "fill_in": str(filled).lower(),
            "diagram_source": "derived from the document's components and endpoints" if derived else "model",
        }
        if render_note:
            data["render_note"] = render_note
        return attach(Outcome(output=output, data=data), checks)

    def _components(self, ws: Workspace) -> tuple[Check, list[str]]:
        """Every component of the document is a node of the diagram and vice versa."""
        dia = next((p for p in (MERMAID, DOT) if ws.exists(p)), None)
        if dia is None or not ws.exists(DOC):
            return Check("components", "agentd diagram parser", SKIPPED, "no document or diagram"), []
        comps = find_section(section_bodies(ws.read_text(DOC)), REQUIRED_SECTIONS["Components"])
        names = [c.name for c in parse_components(comps[1])] if comps else []
        return diagram_check(dia, ws.read_text(dia), names)

    @staticmethod
    def _render_check(rendered: str | None, note: str) -> Check:
        tool = "mmdc" if note.startswith("mmdc") else "Graphviz dot" if "Graphviz" in note else "renderer"
        if rendered:
            return Check("render", "mmdc or dot", PASSED, f"rendered to {rendered}")
        if "not installed" in note or "not rendered" in note:
            return Check("render", tool, SKIPPED, note, required=False)
        return Check("render", tool, FAILED, note)

    # ---------------------------------------------------------------- fill-in
    @staticmethod
    def _no_tool_use(res: LoopResult, ws: Workspace) -> bool:
        """The round ended without one successful tool call and without any of the files:
        the model cannot (or will not) use the tools, so more rounds of the same are wasted."""
        return not any(ok for _tool, ok in res.tool_calls) and not any(ws.exists(p) for p in (DOC, MERMAID, DOT))

    @staticmethod
    def _files_missing(ws: Workspace) -> bool:
        return not ws.exists(DOC) or not (ws.exists(MERMAID) or ws.exists(DOT))

    async def _fill_in(
        self, s: Session, ws: Workspace, diagram: str, problems: list[str], strategy: FillIn | None
    ) -> tuple[list[str], bool, bool]:
        """The document section by section without tools (unless a good one was written), then
        the diagram derived from it (unless a good one was written): (the problems left, empty
        when done; whether the document was filled in; whether the diagram was derived)."""
        ctx = s.ctx
        filled = derived = False
        if not ws.exists(DOC) or check_document(ws.read_text(DOC)):
            if strategy is None:  # the model's profile names no way round the tools
                return problems, False, False
            ctx.step(
                "tools unavailable: filling in the document section by section",
                phase="fill_in",
                problems="; ".join(problems)[:300],
            )
            ctx.status("filling in the document section by section")
            project = (ctx.task.input.strip().splitlines() or ["the system"])[0][:80]
            try:
                doc = await fill_in_document(s.llm, ctx, project, strategy)
            except FillInFailed as exc:
                return [f"the model did not write the files with the tools, and {exc}"], False, False
            ws.write_text(DOC, doc.markdown(diagram))
            filled = True
            ctx.step(
                f"fill-in: wrote {DOC} from the model's answers ({len(doc.components)} components, "
                f"{len(doc.entities)} entities, {len(doc.endpoints)} endpoints)",
                phase="fill_in",
            )
        existing = MERMAID if ws.exists(MERMAID) else DOT if ws.exists(DOT) else None
        if existing is None or (check_mermaid if existing == MERMAID else check_dot)(ws.read_text(existing)):
            sections = section_bodies(ws.read_text(DOC))
            comps = find_section(sections, REQUIRED_SECTIONS["Components"])
            eps = find_section(sections, REQUIRED_SECTIONS["Endpoints"])
            components = parse_components(comps[1]) if comps else []
            endpoints = parse_endpoints(eps[1]) if eps else []
            if not components:
                problems = [*self._validate(ws), f"no diagram could be derived: {DOC} lists no components"]
                return problems, filled, False
            target = existing or diagram  # a broken diagram is replaced in its own language
            ws.write_text(target, (dot_from if target == DOT else mermaid_from)(components, endpoints))
            derived = True
            ctx.step(
                f"diagram: derived {target} from the {len(components)} components and {len(endpoints)} "
                f"endpoints of {DOC} (a deterministic transformation of the model's text, "
                "not drawn by the model)",
                phase="fill_in",
                derived="true",
            )
        problems = self._validate(ws)
        if problems:
            ctx.step(
                f"check: {len(problems)} problem(s) after the fill-in: " + "; ".join(problems)[:300],
                check="architecture",
                ok="false",
            )
        return problems, filled, derived

    # ---------------------------------------------------------------- helpers
    def _brief(self, ctx: TaskContext, ws: Workspace) -> str:
        text = f"Design this system: {ctx.task.input.strip() or '(no description given)'}"
        text += project_context(ctx, ws, 6000, 50)
        return text

    def _take_from_answer(self, ctx: TaskContext, ws: Workspace, answer: str, diagram: str) -> None:
        """A model without tools gives the files as fenced blocks: take them from the answer."""
        if ws.exists(DOC) and (ws.exists(MERMAID) or ws.exists(DOT)):
            return
        taken = []
        for lang, body, name in fenced_blocks(answer):
            target = name if name in (DOC, MERMAID, DOT) else None
            if target is None and lang in ("markdown", "md") and "#" in body:
                target = DOC
            elif target is None and lang == "mermaid":
                target = MERMAID
            elif target is None and lang in ("dot", "graphviz"):
                target = DOT
            if target and not ws.exists(target):
                ws.write_text(target, body)
                taken.append(target)
        if not ws.exists(DOC) and re.search(r"^#+\s*components", answer, re.I | re.M):
            ws.write_text(DOC, answer)  # the whole answer is the document
            taken.append(DOC)
        if taken:
            ctx.log("took from the answer: " + ", ".join(taken))

    def _validate(self, ws: Workspace) -> list[str]:
        problems = []
        if ws.exists(DOC):
            problems += check_document(ws.read_text(DOC))
        else:
            problems.append(f"{DOC} was not written")
        if ws.exists(MERMAID):
            problems += check_mermaid(ws.read_text(MERMAID))
        elif ws.exists(DOT):
            problems += check_dot(ws.read_text(DOT))
        else:
            problems.append(f"the diagram ({MERMAID}) was not written")
        return problems or self._components(ws)[1]

    async def _render(self, s: Session, ws: Workspace) -> tuple[str | None, str]:
        """Render the diagram to SVG with mmdc or dot when installed; (svg path, note)."""
        if ws.exists(MERMAID):
            tool = shutil.which("mmdc")
            if tool is None:
                return None, "mmdc (Mermaid CLI) is not installed: the diagram is not rendered"
            cmd = [tool, "-i", MERMAID, "-o", SVG]
            browser = shutil.which("chromium") or shutil.which("chromium-browser")
            if browser:  # the system's Chromium for mmdc's puppeteer (no browser download)
                ws.write_text(
                    PUPPETEER,
                    json.dumps(
                        {
                            "executablePath": browser,
                            "args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
                        }
                    ),
                )
                cmd += ["-p", PUPPETEER]
            # Chromium reserves far more address space than any sane RLIMIT_AS.
            limits = Limits(timeout_s=60, memory_mb=0, file_size_mb=32)
        else:
            tool = shutil.which("dot")
            if tool is None:
                return None, "Graphviz (dot) is not installed: the diagram is not rendered"
            cmd = [tool, "-Tsvg", DOT, "-o", SVG]
            limits = Limits(timeout_s=30, memory_mb=512, file_size_mb=32)
        try:
            result = await Sandbox.for_settings(ws.root, s.env.settings, limits).run(cmd)
        except WeakSandboxRefused as exc:
            return None, f"the diagram is not rendered: {exc}"
        s.env.report_isolation(result)
        if result.ok and ws.exists(SVG):
            return SVG, ""
        note = f"rendering failed: {(result.stderr or result.stdout).strip()[-300:]}"
        s.ctx.log(note)
        return None, note
