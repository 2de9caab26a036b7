"""frontend: a web UI wired to the backend's API, checked by loading it and its API calls.

The model writes the UI under ``frontend/`` (``index.html``, ``styles.css``,
``app.js``; or the framework the task asks for, with a ``frontend/package.json``
``build`` script) with the file tools. The brief holds the backend's routes
(from ``service.json``, ``ARCHITECTURE.md`` and the backend's result among the
inputs) and the designer's palette (``DESIGN.md``).

Checks, round after round (option ``tries``, default 3), problems going back to
the model:

1. the page parses and every local file it loads (scripts, stylesheets, images)
   exists; it loads at least one script;
2. every script passes ``node --check`` in the sandbox (skipped with a note
   when node is not installed);
3. every API call of the scripts (``fetch()``, or a wrapper around it) matches
   a route the backend declares, method included;
4. when the backend's ``service.json`` says how to start it, the backend is
   started in the sandbox and every parameter-free GET call the UI makes is
   requested from it: each must answer below 400;
5. the page is loaded in headless Chromium (agentd/checks/browser.py) against the running
   backend: it renders, logs no console error, throws nothing, every API call it makes
   succeeds; a screenshot is kept. Skipped, saying why, without Chromium or Playwright.

The result carries these as checks (page, syntax, api-routes, live, browser).

Options: ``tries``, ``dir`` (default ``frontend``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import PurePosixPath
from typing import Any

from ..checks import FAILED, PASSED, SKIPPED, Check, attach
from ..checks.browser import BrowserReport, browser_check
from ..loop import TOKEN_BUDGET
from ..runtime import Outcome, TaskContext, register
from ..tools import FILE_TOOLS
from ..workspace import Workspace
from ._llm_agent import (
    LLMAgent,
    Session,
    extract_files,
    project_context,
    record_artifacts,
    write_extracted,
)
from ._team import input_of, project_dir, read_shared
from ._team_web import (
    ApiCall,
    Route,
    api_calls,
    declared_routes,
    match_route,
    page_refs,
    routes_from_manifest,
    routes_from_text,
)

MANIFEST = "service.json"
SYSTEM = """You are the frontend engineer of a team of agents. Build the web UI the user asks for \
under {dir}/: {dir}/index.html, {dir}/styles.css and {dir}/app.js (plain HTML, CSS and JavaScript, \
no build step, no external CDN), unless the task names a framework.

- index.html loads styles.css and app.js with relative paths.
- app.js talks to the backend with fetch(), through one constant for the server, \
e.g. `const API_BASE = "";` followed by fetch(`${{API_BASE}}/todos`). Call only the backend routes \
listed below, with their exact paths and methods, and send JSON bodies with a Content-Type header.
- Follow the design spec's palette and components when there is one.
- Write every file with the write_file tool (the whole file each time). When done, answer with one \
short line. The agent then checks the page, the scripts' syntax and the API calls; you get the \
problems to fix."""


def _live_probe() -> str | None:
    """The backend agent's route probe (start the service, request routes), when available."""
    try:
        from ._backend_service import PROBE
    except ImportError:
        return None
    return PROBE


@register
class FrontendAgent(LLMAgent):
    type = "frontend"
    capabilities = ("ui", "web", "html", "javascript")
    description = "writes a web UI (HTML, CSS, JavaScript) wired to the backend's API and checks it"
    tools = FILE_TOOLS

    async def run(self, ctx: TaskContext) -> Outcome:
        project_dir(ctx)
        opts = ctx.task.options
        tries = max(1, int(opts.get("tries", "3") or 3))
        base = (opts.get("dir") or "frontend").strip("/") or "frontend"
        ws = Workspace(ctx.workspace)
        before = {p: ws.artifact(p).sha256 for p in ws.files()}
        routes = self._routes(ctx)
        problems: list[str] = []
        report: dict[str, Any] = {}
        async with self.session(ctx) as s:
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": SYSTEM.format(dir=base)},
                {"role": "user", "content": self._brief(ctx, ws, routes)},
            ]
            for rnd in range(1, tries + 1):
                ctx.status(f"building the UI (round {rnd} of {tries})")
                res = await s.loop.run(messages)
                messages = res.messages
                files = {
                    p if p.startswith(f"{base}/") else f"{base}/{p}": c for p, c in extract_files(res.content).items()
                }
                if files:
                    write_extracted(ctx, files)
                problems, report = await self._check(s, ws, base, routes)
                if not problems:
                    break
                ctx.step(
                    f"check: {len(problems)} problem(s): " + "; ".join(problems)[:300], check="frontend", ok="false"
                )
                if res.stopped == TOKEN_BUDGET or rnd == tries:
                    break
                messages.append(
                    {
                        "role": "user",
                        "content": "The UI does not pass its checks yet:\n- "
                        + "\n- ".join(problems)
                        + "\nFix these with write_file, then answer with one line.",
                    }
                )
        browser: BrowserReport | None = report.pop("_browser", None)
        changed = [p for p in ws.files() if before.get(p) != ws.artifact(p).sha256 and p.startswith(f"{base}/")]
        record_artifacts(ctx, changed + ([browser.screenshot] if browser and browser.screenshot else []))
        data = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in report.items()}
        data["files"] = ", ".join(changed)
        data["routes_declared"] = ", ".join(f"{r.method} {r.path}" for r in routes)
        if browser and browser.screenshot:
            data["screenshot"] = browser.screenshot
        if problems:
            data["problems"] = "\n".join(problems)
            failed = [Check("frontend", "agentd frontend", FAILED, "; ".join(problems))]
            return attach(
                Outcome(
                    ok=False, error=f"the UI fails its checks after {tries} round(s): " + "; ".join(problems), data=data
                ),
                failed + ([browser.check] if browser else []),
            )
        checks = self._checks(report, routes, browser)
        line = "; ".join(c.detail for c in checks if c.outcome != SKIPPED)
        ctx.step("check: " + line, check="frontend", ok="true")
        return attach(Outcome(output=f"wrote {len(changed)} file(s) under {base}/; " + line, data=data), checks)

    @staticmethod
    def _checks(report: dict[str, Any], routes: list[Route], browser: BrowserReport | None) -> list[Check]:
        calls = report.get("api_calls", [])
        syntax = report.get("syntax", "")
        checks = [
            Check("page", "agentd frontend", PASSED, f"page loads {report.get('loads', '')}".strip()),
            Check("syntax", "node --check", SKIPPED if "not installed" in syntax else PASSED, syntax, required=False)
            if syntax
            else None,
            Check(
                "api-routes",
                "agentd frontend",
                PASSED,
                f"{len(calls)} API call(s) match the backend's routes" if routes else "no backend routes to check",
            ),
            Check("live", "backend probe", PASSED, f"live: {report['live']}") if report.get("live") else None,
            browser.check if browser else None,
        ]
        return [c for c in checks if c is not None]

    # ---------------------------------------------------------------- brief
    def _routes(self, ctx: TaskContext) -> list[Route]:
        manifest = routes_from_manifest(read_shared(ctx, MANIFEST))
        doc = routes_from_text(read_shared(ctx, "ARCHITECTURE.md"), "ARCHITECTURE.md")
        back = input_of(ctx, "backend")
        from_result = routes_from_text(back.data.get("routes", "").replace(",", "\n"), "backend result") if back else []
        return declared_routes(manifest, doc, from_result)

    def _brief(self, ctx: TaskContext, ws: Workspace, routes: list[Route]) -> str:
        text = f"Build the UI of: {ctx.task.input.strip() or '(no description given)'}"
        if routes:
            text += "\n\nThe backend's routes (call only these):\n" + "\n".join(
                f"- {r.method} {r.path}" for r in routes
            )
        else:
            text += "\n\nNo backend routes are declared yet: keep the API calls in app.js behind API_BASE."
        manifest = read_shared(ctx, MANIFEST, 4000)
        if manifest:
            text += f"\n\nThe backend's {MANIFEST}:\n{manifest}"
        arch = read_shared(ctx, "ARCHITECTURE.md", 5000)
        if arch:
            text += f"\n\nThe architect's design (ARCHITECTURE.md):\n\n{arch}"
        design = read_shared(ctx, "DESIGN.md", 4000)
        if design:
            text += f"\n\nThe designer's spec (DESIGN.md):\n\n{design}"
        text += project_context(ctx, ws, 3000, 60)
        return text

    # ---------------------------------------------------------------- checks
    async def _check(
        self, s: Session, ws: Workspace, base: str, routes: list[Route]
    ) -> tuple[list[str], dict[str, Any]]:
        ctx = s.ctx
        problems: list[str] = []
        report: dict[str, Any] = {}
        index = f"{base}/index.html"
        if not ws.exists(index):
            return [f"{index} was not written"], report
        html = ws.read_text(index)
        refs, inline, tags = page_refs(html)
        if tags < 3:
            problems.append(f"{index} is nearly empty")
        folder = PurePosixPath(index).parent
        scripts = []
        for tag, ref in refs:
            target = str(folder / ref) if not ref.startswith("/") else f"{base}{ref}"
            target = str(PurePosixPath(target))
            if ".." in PurePosixPath(target).parts or not ws.exists(target):
                problems.append(f"{index} loads {ref!r} ({tag}), which does not exist in {base}/")
            elif tag == "script":
                scripts.append(target)
        if not scripts and not any(x.strip() for x in inline):
            problems.append(f'{index} loads no script: add <script src="app.js"></script>')
        report["loads"] = f"({len(refs)} local file(s))"
        js_files = sorted({*scripts, *(p for p in ws.files(base) if p.endswith((".js", ".mjs")))})
        # syntax, in the sandbox
        if shutil.which("node") is None:
            report["syntax"] = "node not installed: JavaScript syntax not checked"
            ctx.log(report["syntax"])
        elif js_files:
            bad = 0
            for f in js_files:
                r = await s.env.sandbox.run(["node", "--check", f], timeout_s=30)
                s.env.report_isolation(r)
                if not r.ok:
                    bad += 1
                    problems.append(f"{f} has a syntax error (node --check): {r.describe(1500).strip()}")
            report["syntax"] = f"{len(js_files) - bad} of {len(js_files)} script(s) pass node --check"
        # API calls against the declared routes
        calls: list[ApiCall] = []
        for f in js_files:
            calls += api_calls(ws.read_text(f))
        for code in inline:
            calls += api_calls(code)
        report["api_calls"] = [f"{c.method} {c.path or '?'}" for c in calls]
        if routes:
            resolved = [c for c in calls if c.path]
            if not resolved:
                problems.append(
                    "the scripts make no API call the agent can read: call the backend with "
                    "fetch(`${API_BASE}/path`) using the routes listed"
                )
            for c in resolved:
                hit, methods = match_route(c, routes)
                if hit is None:
                    declared = (
                        f"the backend declares only {', '.join(methods)} for this path"
                        if methods
                        else ("the backend declares no such route")
                    )
                    problems.append(f"{c.method} {c.path} (line {c.line}: {c.source}) — {declared}")
        if not problems:
            live = await self._live(s, ws, [c for c in calls if c.path and c.method == "GET" and "{}" not in c.path])
            if live is not None:
                ok, text = live
                report["live"] = text
                if not ok:
                    problems.append(f"the running backend does not answer the UI's calls: {text}")
        if not problems:
            manifest = self._manifest(ws)
            ctx.status("loading the UI in a headless browser")
            browser = await browser_check(ws.root, base, manifest, s.env.settings)
            report["_browser"] = browser
            problems += browser.problems
        return problems, report

    @staticmethod
    def _manifest(ws: Workspace) -> dict[str, Any] | None:
        try:
            m = json.loads(ws.read_text(MANIFEST)) if ws.exists(MANIFEST) else None
        except json.JSONDecodeError:
            return None
        return m if isinstance(m, dict) else None

    async def _live(self, s: Session, ws: Workspace, calls: list[ApiCall]) -> tuple[bool, str] | None:
        """Start the backend (its service.json) in the sandbox and request the UI's GET calls."""
        probe = _live_probe()
        if probe is None or not calls or not ws.exists(MANIFEST):
            return None
        try:
            m = json.loads(ws.read_text(MANIFEST))
        except json.JSONDecodeError:
            return None
        if not isinstance(m, dict) or not isinstance(m.get("start"), str):
            return None
        paths = sorted({c.path for c in calls})
        spec = {
            "start": m["start"],
            "startup_s": m.get("startup_s", 15),
            "routes": [{"method": "GET", "path": p} for p in paths],
        }
        ws.write_text(".orchgpt/frontend-probe.json", json.dumps(spec))
        s.ctx.status("starting the backend to load the UI's API calls")
        r = await s.env.sandbox.run(
            [sys.executable, "-c", probe, ".orchgpt/frontend-probe.json"],
            timeout_s=min(s.env.sandbox.limits.timeout_s, 45),
        )
        line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("ROUTE-REPORT ")), "")
        if not line:
            s.ctx.log("could not start the backend to check the UI's calls: " + r.describe(500))
            return None
        rep = json.loads(line[len("ROUTE-REPORT ") :])
        if not rep.get("up"):
            s.ctx.log("the backend did not start; the UI's calls were checked against its declared routes only")
            return None
        rows = rep.get("routes", [])
        text = ", ".join(f"{x['method']} {x['path']} {x.get('status')}" for x in rows)
        return all(x.get("ok") for x in rows), text
