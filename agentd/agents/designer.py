"""designer: a design spec and SVG mock-ups of the user interface, checked.

The model writes ``DESIGN.md`` (sections Palette, Typography, Layout and
Components; the palette as hex colours) and at least one SVG mock-up under
``mockups/`` with the file tools (or in fenced blocks). Checks: the sections
are there and filled, the palette has at least three colours, every SVG parses
as XML (no DTD or entities), has the SVG namespace, a size or viewBox, and
some content; text colours reach WCAG AA contrast on what they are drawn on, computed
(agentd/checks/design.py). Problems go back to the model, at most ``tries`` rounds. Each
mock-up is then rendered to a PNG preview (rsvg-convert). The result carries the checks
(design, contrast, render).

With option ``images`` (``true``), the designer also asks the provider's
images API (``POST /images/generations``) for a hero image; a provider
without one (404, 405, 501, "not supported") is noted and skipped.

Options: ``tries`` (default 3), ``images``, ``image_model``, ``image_size``.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from typing import Any

import httpx

from ..checks import FAILED, PASSED, Check, attach
from ..checks.design import contrast_check, render_check
from ..loop import TOKEN_BUDGET
from ..runtime import Outcome, TaskContext, register
from ..tools import FILE_TOOLS
from ..workspace import Workspace
from ._llm_agent import LLMAgent, fenced_blocks, project_context, record_artifacts
from ._markdown import find_section, missing_sections, section_bodies
from ._team import project_dir, read_shared

DOC = "DESIGN.md"
MOCKUPS = "mockups"
SVG_NS = "{http://www.w3.org/2000/svg}"
SECTIONS = {
    "Palette": re.compile(r"palette|colou?rs?", re.I),
    "Typography": re.compile(r"typograph|type|fonts?", re.I),
    "Layout": re.compile(r"layout|grid|structure", re.I),
    "Components": re.compile(r"components?|widgets|elements", re.I),
}
_HEX = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b")

SYSTEM = """You are the UI designer of a team of agents. For the product the user describes, write:

1. {doc}: a Markdown design spec with these level-2 sections:
   ## Palette     - 4 to 8 colours as hex codes with their role (e.g. `#1F6FEB` primary)
   ## Typography  - font families, sizes and weights for headings, body and small text
   ## Layout      - the page structure, grid, spacing and how it adapts to small screens
   ## Components  - each UI component (buttons, inputs, lists, cards, ...) and its states
2. One or more SVG mock-ups of the main screens under {mockups}/ (e.g. {mockups}/main.svg): standalone \
SVG files with xmlns="http://www.w3.org/2000/svg" and a viewBox, drawn with the palette's colours \
(rect, text, line, circle; no scripts, no external references).

Write each file with the write_file tool (the whole file at once). When all files are written, \
answer with one line that sums the design up."""


def palette(doc: str) -> list[str]:
    """The hex colours of the Palette section, in order, without repeats."""
    found = find_section(section_bodies(doc), SECTIONS["Palette"])
    seen: dict[str, None] = {}
    for c in _HEX.findall(found[1] if found else ""):
        seen.setdefault(c.upper(), None)
    return list(seen)


def check_design(doc: str) -> list[str]:
    problems = missing_sections(doc, DOC, SECTIONS)
    if problems and problems[0].endswith("empty or nearly empty"):
        return problems
    if find_section(section_bodies(doc), SECTIONS["Palette"]) and len(palette(doc)) < 3:
        problems.append(f"the palette of {DOC} must list at least 3 colours as hex codes (e.g. #1F6FEB)")
    return problems


def check_svg(name: str, text: str) -> list[str]:
    """Problems of one SVG mock-up (empty: it parses and looks like a drawing)."""
    if re.search(r"<!DOCTYPE|<!ENTITY", text, re.I):
        return [f"{name}: remove the DOCTYPE/ENTITY declarations (plain SVG only)"]
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return [f"{name} is not well-formed XML: {exc}"]
    if root.tag == "svg":
        return [f'{name}: the <svg> element needs xmlns="http://www.w3.org/2000/svg"']
    if root.tag != f"{SVG_NS}svg":
        return [f"{name}: the root element is <{root.tag.split('}')[-1]}>, not <svg>"]
    problems = []
    if not (root.get("viewBox") or (root.get("width") and root.get("height"))):
        problems.append(f"{name}: give the <svg> a viewBox (or width and height)")
    if any(el.tag in (f"{SVG_NS}script", f"{SVG_NS}foreignObject") for el in root.iter()):
        problems.append(f"{name}: no <script> or <foreignObject> in a mock-up")
    shapes = [el for el in root.iter() if el is not root]
    if len(shapes) < 3:
        problems.append(f"{name} draws almost nothing ({len(shapes)} elements)")
    return problems


@register
class DesignerAgent(LLMAgent):
    type = "designer"
    capabilities = ("design", "ui", "mockups", "svg")
    description = "writes a design spec (palette, typography, layout, components) and SVG mock-ups"
    tools = FILE_TOOLS

    async def run(self, ctx: TaskContext) -> Outcome:
        project_dir(ctx)
        opts = ctx.task.options
        tries = max(1, int(opts.get("tries", "3") or 3))
        ws = Workspace(ctx.workspace)
        before = {p: ws.artifact(p).sha256 for p in ws.files()}
        problems: list[str] = []
        async with self.session(ctx) as s:
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": SYSTEM.format(doc=DOC, mockups=MOCKUPS)},
                {"role": "user", "content": self._brief(ctx, ws)},
            ]
            for rnd in range(1, tries + 1):
                ctx.status(f"designing (round {rnd} of {tries})")
                res = await s.loop.run(messages)
                messages = res.messages
                self._take_from_answer(ctx, ws, res.content)
                problems = self._validate(ws)
                if not problems:
                    break
                ctx.step(f"check: {len(problems)} problem(s): " + "; ".join(problems)[:300], check="design", ok="false")
                if res.stopped == TOKEN_BUDGET or rnd == tries:
                    break
                messages.append(
                    {
                        "role": "user",
                        "content": "The design is not finished yet:\n- "
                        + "\n- ".join(problems)
                        + "\nFix these with write_file, then answer with one line.",
                    }
                )
            mockups = self._mockups(ws)
            image_note = ""
            images: list[str] = []
            if opts.get("images", "").lower() in ("1", "true", "yes") and not problems:
                images, image_note = await self._images(ctx, ws)
        changed = [p for p in ws.files() if before.get(p) != ws.artifact(p).sha256]
        arts = record_artifacts(ctx, [p for p in changed if p == DOC or p in mockups or p in images])
        contrast, _ = self._contrast(ws)
        if problems:
            design = Check("design", "agentd designer", FAILED, "; ".join(problems))
            return attach(
                Outcome(
                    ok=False,
                    error=f"the design is incomplete after {tries} round(s): " + "; ".join(problems),
                    data={"problems": "\n".join(problems)},
                ),
                [design, contrast],
            )
        render, pngs = render_check(ws.root, mockups)
        ctx.step(f"check: {render.detail}", check="render", ok=str(render.outcome == PASSED).lower())
        arts += record_artifacts(ctx, pngs)
        colours = palette(ws.read_text(DOC))
        ctx.step(f"check: {DOC} complete, {len(mockups)} SVG mock-up(s) parse", check="design", ok="true")
        out = f"wrote {DOC} ({len(colours)} colours) and {len(mockups)} SVG mock-up(s): {', '.join(mockups)}"
        if images:
            out += f"; images: {', '.join(images)}"
        data = {
            "document": DOC,
            "palette": ", ".join(colours),
            "mockups": ", ".join(mockups),
            "files": ", ".join(a.path for a in arts),
        }
        if image_note:
            data["images_note"] = image_note
        if images:
            data["images"] = ", ".join(images)
        design = Check("design", "agentd designer", PASSED, f"{DOC} complete; {len(mockups)} SVG mock-up(s) parse")
        return attach(Outcome(output=out, data=data), [design, contrast, render])

    # ---------------------------------------------------------------- helpers
    def _brief(self, ctx: TaskContext, ws: Workspace) -> str:
        text = f"Design the user interface of: {ctx.task.input.strip() or '(no description given)'}"
        arch = read_shared(ctx, "ARCHITECTURE.md", 6000)
        if arch:
            text += f"\n\nThe architect's design (ARCHITECTURE.md):\n\n{arch}"
        text += project_context(ctx, ws, 6000, 50)
        return text

    def _mockups(self, ws: Workspace) -> list[str]:
        return [p for p in ws.files() if p.lower().endswith(".svg") and p.startswith(f"{MOCKUPS}/")]

    def _validate(self, ws: Workspace) -> list[str]:
        problems = check_design(ws.read_text(DOC)) if ws.exists(DOC) else [f"{DOC} was not written"]
        mockups = self._mockups(ws)
        if not mockups:
            problems.append(f"no SVG mock-up under {MOCKUPS}/ was written (e.g. {MOCKUPS}/main.svg)")
        for m in mockups:
            problems += check_svg(m, ws.read_text(m))
        return problems + self._contrast(ws)[1]

    def _contrast(self, ws: Workspace) -> tuple[Check, list[str]]:
        doc = ws.read_text(DOC) if ws.exists(DOC) else ""
        found = find_section(section_bodies(doc), SECTIONS["Palette"])
        lines = found[1].splitlines() if found else []
        return contrast_check(lines, {m: ws.read_text(m) for m in self._mockups(ws)})

    def _take_from_answer(self, ctx: TaskContext, ws: Workspace, answer: str) -> None:
        """A model without tools gives the files as fenced blocks."""
        taken = []
        n = len(self._mockups(ws))
        for lang, body, name in fenced_blocks(answer):
            target = None
            if name == DOC or (name is None and lang in ("markdown", "md") and not ws.exists(DOC)):
                target = DOC
            elif (name or "").endswith(".svg") or (
                name is None and (lang == "svg" or body.lstrip().startswith("<svg"))
            ):
                base = (name or f"screen{n + 1}.svg").rsplit("/", 1)[-1]
                target = f"{MOCKUPS}/{base}"
                n += 1
            if target and not (target == DOC and ws.exists(DOC) and name is None):
                ws.write_text(target, body)
                taken.append(target)
        if taken:
            ctx.log("took from the answer: " + ", ".join(taken))

    async def _images(self, ctx: TaskContext, ws: Workspace) -> tuple[list[str], str]:
        """Ask the provider's images API for a hero image; ([], why) when it has none."""
        settings = self.settings_for(ctx).smart
        url = settings.url + "/images/generations"
        body: dict[str, Any] = {
            "prompt": f"Hero illustration for: {ctx.task.input.strip()[:500]}",
            "n": 1,
            "size": ctx.task.options.get("image_size", "1024x1024"),
            "response_format": "b64_json",
        }
        if ctx.task.options.get("image_model"):
            body["model"] = ctx.task.options["image_model"]
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=min(settings.timeout_s, 120)) as client:
                r = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            note = f"images API unreachable ({type(exc).__name__}); skipped"
            ctx.log(note)
            return [], note
        if r.status_code in (400, 404, 405, 501) or (r.status_code >= 400 and "support" in r.text.lower()):
            note = f"the provider offers no images API (HTTP {r.status_code}); skipped"
            ctx.log(note)
            return [], note
        if r.status_code >= 400:
            note = f"images API failed (HTTP {r.status_code}): {r.text[:200]}; skipped"
            ctx.log(note)
            return [], note
        try:
            item = r.json()["data"][0]
            data = base64.b64decode(item["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError):
            note = "the images API answered without a base64 image; skipped"
            ctx.log(note)
            return [], note
        if not data.startswith(b"\x89PNG") and not data[:3] == b"\xff\xd8\xff":
            note = "the images API answered with something that is not a PNG or JPEG image; skipped"
            ctx.log(note)
            return [], note
        path = "images/hero.png" if data.startswith(b"\x89PNG") else "images/hero.jpg"
        ws.write_bytes(path, data)
        ctx.log(f"images API: wrote {path} ({len(data)} bytes)")
        return [path], ""
