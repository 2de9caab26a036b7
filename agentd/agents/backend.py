"""backend: a service's code and its tests, run in the sandbox and repaired until they pass.

Round after round (option ``tries``, default 3):

1. the model writes the code and the tests with the file tools (it may run
   commands in the sandbox itself); a model that answers with named fenced
   blocks instead gets them written for it;
2. the agent runs the tests in the sandbox (pytest for Python, with agentd's
   own interpreter; ``node --test``, ``go test``, ``cargo test`` for others, or
   option ``test_command``);
3. for a web service, the agent starts it in the sandbox on a free loopback port
   (the command and the routes come from the ``service.json`` the model writes)
   and checks that every declared route answers as declared; when the task has a
   design (the architect's ARCHITECTURE.md with an Endpoints table), the same start
   checks the contract (agentd.checks.contract): every method and path the design
   declares is served (by the service's OpenAPI schema when it has one);
4. once the tests, routes and contract pass, the mutation check
   (agentd.checks.mutation) runs the tests against deliberately broken copies
   of the Python code; when no broken copy
   makes a test fail, the tests are vacuous and the model is asked for real ones
   (option ``mutants``: at most this many broken copies, default 12; 0 turns it off);
5. ruff (agentd.checks.lint: syntax errors and pyflakes) on the Python code, an
   advisory check: its problems go back to the model but do not fail the task;
6. a failure goes back to the model with the output, for the next round.

The result's data holds ``tests_passed`` ("true"/"false"), ``test_output``,
``test_command``, ``rounds``, ``mutation_score`` ("3/4 (75%)") and, for a web
service, ``routes``; ``checks`` lists every check with its tool and outcome
(orchgpt.checks, compact JSON): a failed required check fails the task. The
output says it in one line. The architect's ARCHITECTURE.md (same workspace, or an
earlier sub-task's result) is part of the brief.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import FAILED, PASSED, SKIPPED, Check, attach, contract, lint
from ..checks import mutation as mut
from ..errors import TaskFailed
from ..loop import TOKEN_BUDGET
from ..runtime import Outcome, TaskContext, register
from ..sandbox import SandboxResult, summarize_tests
from ..workspace import Workspace
from ._llm_agent import (
    LLMAgent,
    Session,
    extract_files,
    project_context,
    record_artifacts,
    write_extracted,
)

MANIFEST = "service.json"
CHECK_ORDER = ("tests", "ruff", "mutation", "routes", "contract")  # as the result lists them
CONTRACT_SCRATCH = ".orchgpt/contract.json"  # the design's routes for the probe, removed after
DOC = "ARCHITECTURE.md"
DOC_LIMIT = 6000
OUTPUT_LIMIT = 8000
PYTHON_PACKAGES = (
    "fastapi", "uvicorn", "starlette", "httpx", "pydantic", "flask", "sqlalchemy", "requests",
    "aiohttp", "pytest_asyncio",
)
WEB_FRAMEWORKS = {"fastapi": ("fastapi", "uvicorn", "httpx"), "flask": ("flask",)}
_WEB = re.compile(r"\b(api|rest|http|web|server|service|fastapi|flask|django|endpoints?|routes?|crud)\b", re.I)


@dataclass(frozen=True)
class Language:
    name: str
    command: tuple[str, ...]  # the test command
    tool: str  # the program that must be installed
    hint: str  # how tests are written


def _language(name: str) -> Language:
    n = (name or "python").strip().lower()
    if n in ("python", "python3", "py", ""):
        return Language("python", (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "--color=no", "-o", "addopts=",
                                   # hypothesis' plugin alone takes seconds to import; its
                                   # tests run without it
                                   "-p", "no:hypothesispytest"), sys.executable,
                        "pytest functions in files named test_*.py next to the code "
                        "(import the code as a module of the project root)")
    if n in ("javascript", "js", "node", "nodejs"):
        return Language("javascript", ("node", "--test"), "node",
                        "node:test tests in files named *.test.js (run with `node --test`)")
    if n in ("go", "golang"):
        return Language("go", ("go", "test", "./..."), "go", "Go tests in *_test.go files, with a go.mod")
    if n in ("rust", "rs"):
        return Language("rust", ("cargo", "test", "--offline"), "cargo",
                        "#[test] functions, a Cargo.toml without external crates")
    return Language(n, (), n, "tests, and the command that runs them in service.json as \"test\"")


def installed_python_packages() -> tuple[list[str], list[str]]:
    have: list[str] = []
    missing: list[str] = []
    for name in PYTHON_PACKAGES:
        (have if importlib.util.find_spec(name) is not None else missing).append(name)
    return have, missing


SYSTEM = """You are a backend engineer in a team of agents. Write the service the user asks for in \
{language}, with its tests.

- Write every file with the write_file tool (the whole file each time).
- Tests: {hint}. They are run with `{command}` in the project directory, in a sandbox \
without network access.
- {packages}
{web}- You may run commands (e.g. the tests) with run_command.
- When the code and its tests are written, answer with one short line. The agent then runs \
the tests itself; if they fail, you get the output to fix them."""

WEB_RULES = """- This is a web service. Also write {manifest}: {{"start": "<shell command that \
starts the server on host 127.0.0.1 and port {{port}}>", "routes": [{{"method": "GET", "path": \
"/health", "status": 200}}, ...]}} listing the routes to check: concrete paths (no \
placeholders), the expected status code, and a JSON "body" for POST/PUT/PATCH. The agent \
starts the server with it and requests each route.
"""

PROBE = r"""
import json, os, signal, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request
m = json.load(open(sys.argv[1]))
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cmd = str(m["start"]).replace("{port}", str(port)).replace("$PORT", str(port))
log = tempfile.TemporaryFile()
p = subprocess.Popen(cmd, shell=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     env=dict(os.environ, PORT=str(port), HOST="127.0.0.1"), start_new_session=True)
report = {"port": port, "command": cmd, "routes": [], "up": False}
deadline = time.monotonic() + float(m.get("startup_s", 15))
while time.monotonic() < deadline and p.poll() is None:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); report["up"] = True; break
    except OSError:
        time.sleep(0.1)
if report["up"]:
    for r in m.get("routes") or []:
        method = str(r.get("method", "GET")).upper(); path = str(r.get("path", "/"))
        import re as _re
        path = _re.sub(r"\{[^}]*\}", "1", path)
        data = None; headers = {}
        if r.get("body") is not None:
            data = json.dumps(r["body"]).encode(); headers["Content-Type"] = "application/json"
        want = r.get("status")
        row = {"method": method, "path": path, "expected": want}
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers), timeout=5) as resp:
                row["status"] = resp.status
        except urllib.error.HTTPError as e:
            row["status"] = e.code
        except Exception as e:
            row["status"] = None; row["error"] = f"{type(e).__name__}: {e}"
        st = row["status"]
        row["ok"] = st is not None and (st == int(want) if want else st < 400)
        report["routes"].append(row)
if report["up"] and len(sys.argv) > 2:  # the design's routes: the contract check
    extra = json.load(open(sys.argv[2]))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as resp:
            paths = json.load(resp).get("paths")
            report["openapi"] = paths if isinstance(paths, dict) else None
    except Exception:
        report["openapi"] = None
    report["contract"] = []
    for r in extra["routes"]:
        data = json.dumps(r["body"]).encode() if r.get("body") is not None else None
        row = {"method": r["method"], "path": r["path"]}
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}{r['path']}", data=data, method=r["method"],
                    headers={"Content-Type": "application/json"} if data else {}), timeout=5) as resp:
                row["status"] = resp.status
        except urllib.error.HTTPError as e:
            row["status"] = e.code
        except Exception as e:
            row["status"] = None; row["error"] = f"{type(e).__name__}: {e}"
        report["contract"].append(row)
report["exited"] = p.poll()
try:
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(3)
except Exception:
    try: os.killpg(p.pid, signal.SIGKILL)
    except Exception: pass
log.seek(0); report["log"] = log.read().decode(errors="replace")[-3000:]
print("ROUTE-REPORT " + json.dumps(report))
"""


@dataclass
class RouteCheck:
    ok: bool
    summary: str  # "GET /health 200, GET /todos 200"
    problem: str  # for the model, when not ok


@dataclass
class Round:
    """What the agent's checks found after one round of the model's work."""

    feedback: str | None = None  # for the model; None when nothing is left to fix
    test: SandboxResult | None = None
    routes: RouteCheck | None = None
    mutation: mut.MutationReport | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every required check passed (advisory ones may still have feedback)."""
        return self.test is not None and self.test.ok and not any(
            c.failed and c.required for c in self.checks)


@register
class BackendAgent(LLMAgent):
    type = "backend"
    capabilities = ("code", "tests", "service")
    description = "writes a service's code with its tests and makes the tests pass in the sandbox"

    async def run(self, ctx: TaskContext) -> Outcome:
        opts = ctx.task.options
        tries = max(1, int(opts.get("tries", "3") or 3))
        lang = _language(ctx.task.language)
        ws = Workspace(ctx.workspace)
        before = {p: ws.artifact(p).sha256 for p in ws.files()}
        web = opts.get("web", "").lower() in ("1", "true", "yes") or bool(_WEB.search(ctx.task.input))
        if opts.get("web", "").lower() in ("0", "false", "no"):
            web = False
        test_cmd = opts.get("test_command") or shlex.join(lang.command)
        if not opts.get("test_command") and (not lang.command or shutil.which(lang.tool) is None):
            if not lang.command:
                test_cmd = ""  # from service.json "test"
            else:
                raise TaskFailed(f"cannot build {lang.name} here: {lang.tool} is not installed on this agent")
        notes: list[str] = []
        packages, missing = self._packages(ctx, lang, notes)
        async with self.session(ctx) as s:
            system = SYSTEM.format(
                language=lang.name, hint=lang.hint, command=test_cmd or "the test command of service.json",
                packages=packages, web=WEB_RULES.format(manifest=MANIFEST) if web else "",
            )
            messages = [{"role": "system", "content": system}, {"role": "user", "content": self._brief(ctx, ws)}]
            last = Round()
            rounds = 0
            cache: dict[str, mut.MutationReport] = {}  # mutation reports by code
            for rounds in range(1, tries + 1):
                ctx.status(f"coding (round {rounds} of {tries})")
                res = await s.loop.run(messages)
                messages = res.messages
                files = extract_files(res.content)
                if files:
                    write_extracted(ctx, files)
                last = await self._check(s, ws, lang, test_cmd, web, cache)
                if last.feedback is None or res.stopped == TOKEN_BUDGET or rounds == tries:
                    break
                messages.append({"role": "user", "content": last.feedback})
        changed = [p for p in ws.files() if before.get(p) != ws.artifact(p).sha256]
        record_artifacts(ctx, changed)
        return self._outcome(ctx, last, rounds, tries, test_cmd, missing, notes, changed)

    # ---------------------------------------------------------------- brief
    def _packages(self, ctx: TaskContext, lang: Language, notes: list[str]) -> tuple[str, list[str]]:
        if lang.name != "python":
            return "Use the standard library only (nothing can be installed).", []
        have, missing = installed_python_packages()
        wanted = ctx.task.input.lower()
        absent = sorted({p for fw, pkgs in WEB_FRAMEWORKS.items() if fw in wanted for p in pkgs if p in missing})
        text = (
            "Installed Python packages you may use besides the standard library: "
            + (", ".join(["pytest", *have]) if have else "pytest only")
            + ". Nothing else can be installed."
        )
        if absent:
            note = f"{', '.join(absent)} not installed on this agent (pip install {' '.join(absent)})"
            notes.append(note)
            ctx.log(note + ": asking for a standard-library service instead")
            text += (f" NOTE: {', '.join(absent)} is NOT installed, so write the service with the "
                     "standard library (http.server) instead, keeping the same routes.")
        return text, absent

    def _brief(self, ctx: TaskContext, ws: Workspace) -> str:
        text = f"Build this: {ctx.task.input.strip() or '(no description given)'}"
        doc = self._architecture(ctx, ws)
        if doc:
            text += f"\n\nThe architect's design ({DOC}):\n\n{doc}"
        text += project_context(ctx, ws, 6000, 50)
        return text

    def _architecture(self, ctx: TaskContext, ws: Workspace) -> str:
        if ws.exists(DOC):
            return ws.read_text(DOC, DOC_LIMIT)
        for r in ctx.task.inputs:  # the architect worked in its own workspace on this host
            if r.workspace and any(a.path == DOC for a in r.artifacts):
                p = Path(r.workspace) / DOC
                try:
                    return p.read_text(encoding="utf-8", errors="replace")[:DOC_LIMIT]
                except OSError:
                    continue
        return ""

    # ---------------------------------------------------------------- checks
    async def _check(
        self, s: Session, ws: Workspace, lang: Language, test_cmd: str, web: bool,
        cache: dict[str, mut.MutationReport],
    ) -> Round:
        """Run the checks on the model's work; the feedback for the model when something is left."""
        tool = _test_tool(lang, test_cmd)
        code = [p for p in ws.files() if not p.endswith((".md", ".mmd", ".dot", ".svg", ".txt"))]
        if not [p for p in code if p != MANIFEST]:
            s.ctx.step("check: no code was written", check="files", ok="false")
            return Round("No code files were written yet. Write the code and its tests with write_file.",
                         checks=[Check("tests", tool, FAILED, "no code was written")])
        manifest, bad = self._manifest(ws) if (web or not test_cmd) else ({}, "")
        if not test_cmd:
            test_cmd = str(manifest.get("test", "")) if isinstance(manifest, dict) else ""
            if not test_cmd:
                return Round((f"Write {MANIFEST} with a \"test\" command that runs the tests." + bad),
                             checks=[Check("tests", tool, FAILED, f"no test command in {MANIFEST}")])
        s.ctx.status("running the tests")
        test = await s.env.sandbox.run(test_cmd)
        s.env.report_isolation(test)
        passed = test.ok
        tail = test.describe(OUTPUT_LIMIT)
        if lang.name == "python" and test.exit_code == 5:
            s.ctx.step("check: no tests were collected", check="tests", ok="false")
            return Round("pytest found no tests (exit code 5). Write tests in files named test_*.py with "
                         "functions named test_*.", test,
                         checks=[Check("tests", tool, FAILED, "no tests were collected"),
                                 Check("mutation", mut.TOOL, SKIPPED, "no tests to judge")])
        s.ctx.step(f"check: tests {'passed' if passed else 'failed'}: {summarize_tests(test)}", check="tests",
                   ok=str(passed).lower(), exit_code=str(test.exit_code))
        rnd = Round(test=test, checks=[Check("tests", tool, PASSED if passed else FAILED, summarize_tests(test))])
        lint_problem = await self._check_lint(s, ws, lang, rnd)
        doc = self._architecture(s.ctx, ws)
        design = contract.design_routes(doc)
        if not passed:
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED, "not run this round: the tests failed"))
            if web:
                rnd.checks.append(Check("routes", f"{MANIFEST} probe", SKIPPED,
                                        "not run this round: the tests failed"))
            if web and design:
                rnd.checks.append(Check("contract", contract.TOOL, SKIPPED,
                                        "not run this round: the tests failed"))
            rnd.feedback = (f"The tests failed. Output:\n{tail}\n\nFind the cause and fix the code (or a "
                            "wrong test) with write_file; then answer with one line.")
            if lint_problem:
                rnd.feedback += "\n\n" + lint_problem
            return rnd
        problems: list[str] = [lint_problem] if lint_problem else []
        if web:
            if bad:
                s.ctx.step(f"check: {bad}", check="routes", ok="false")
                rnd.checks.append(Check("routes", MANIFEST, FAILED, bad))
                problems.append(bad)
            else:
                routes, agreed = await self._check_routes(s, ws, design)
                rnd.routes = routes
                s.ctx.step(f"check: routes {'answer' if routes.ok else 'fail'}: {routes.summary}",
                           check="routes", ok=str(routes.ok).lower())
                rnd.checks.append(Check("routes", f"{MANIFEST} probe", PASSED if routes.ok else FAILED,
                                        routes.summary))
                if not routes.ok:
                    problems.append(routes.problem)
                if agreed is not None:
                    s.ctx.step(f"check: contract: {agreed.summary()}", check="contract", ok=str(agreed.ok).lower())
                    rnd.checks.append(Check("contract", contract.TOOL, PASSED if agreed.ok else FAILED,
                                            agreed.summary()))
                    if not agreed.ok:
                        problems.append(contract.feedback(agreed))
                elif design:
                    rnd.checks.append(Check("contract", contract.TOOL, SKIPPED,
                                            f"the service could not be checked: {routes.summary}"))
        if design and (not web or bad):
            why = ("not a web service (option web=false)" if not web
                   else f"{MANIFEST} is not usable, so the service cannot be started")
            rnd.checks.append(Check("contract", contract.TOOL, SKIPPED, why))
        elif not design:
            rnd.checks.append(Check("contract", contract.TOOL, SKIPPED, "not applicable: " + (
                "the design declares no endpoints" if doc else f"the task has no design ({DOC})")))
        # The costly check last, on work that passes the others (it changes anyway otherwise).
        failing = [c.name for c in rnd.checks if c.failed and c.required]
        if failing:
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED,
                                    f"not run this round: the {' and '.join(failing)} check(s) failed"))
        else:
            mutation_problem = await self._check_mutation(s, ws, lang, test_cmd, test, rnd, cache)
            if mutation_problem:
                problems.append(mutation_problem)
        rnd.feedback = "\n\n".join(problems) or None
        rnd.checks.sort(key=lambda c: CHECK_ORDER.index(c.name) if c.name in CHECK_ORDER else len(CHECK_ORDER))
        return rnd

    async def _check_lint(self, s: Session, ws: Workspace, lang: Language, rnd: Round) -> str:
        """ruff on the Python code (an advisory check added to the round); feedback on problems."""
        if lang.name != "python":
            rnd.checks.append(Check("ruff", lint.TOOL, SKIPPED,
                                    f"not applicable: ruff checks Python, this is {lang.name}", required=False))
            return ""
        s.ctx.status("ruff on the code")
        report = await lint.run_ruff(s.env.sandbox, ws, min(float(s.env.sandbox.limits.timeout_s), 60.0))
        outcome = SKIPPED if report.skipped else PASSED if report.ok else FAILED
        s.ctx.step(f"check: ruff: {report.summary()}", check="ruff", ok=str(report.ok).lower())
        rnd.checks.append(Check("ruff", lint.TOOL, outcome, report.summary(), required=False))
        return report.feedback() if report.problems else ""

    async def _check_mutation(
        self, s: Session, ws: Workspace, lang: Language, test_cmd: str, test: SandboxResult, rnd: Round,
        cache: dict[str, mut.MutationReport],
    ) -> str:
        """The mutation check (its Check added to the round); feedback when the tests are vacuous."""
        if lang.name != "python":
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED,
                                    f"not applicable: the mutation check breaks Python code, this is {lang.name}"))
            return ""
        limit = _int_option(s.ctx.task.options, "mutants", mut.LIMIT)
        if limit <= 0:
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED, "turned off (option mutants=0)"))
            return ""
        files = mut.mutable_files(ws)
        mutants = mut.make_mutants(files, min(limit, 50))
        if not mutants:
            why = "no Python code outside the tests" if not files else "no function to mutate in the code"
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED, f"not applicable: {why}"))
            return ""
        key = "\0".join(f"{p}:{ws.artifact(p).sha256}" for p in ws.files() if p.endswith(".py"))
        report = cache.get(key)
        if report is None:
            s.ctx.status(f"mutation check: the tests against {len(mutants)} broken copies of the code")
            total = min(float(s.env.sandbox.limits.timeout_s), 120.0)
            per = min(30.0, max(5.0, 3 * test.duration_s))
            report = await mut.run_mutants(s.env.sandbox, ws, mutants, test_cmd, per_mutant_s=per,
                                           total_s=total)
            cache[key] = report
        rnd.mutation = report
        if report.problem:
            s.ctx.step(f"check: mutation check could not judge: {report.problem}", check="mutation", ok="false")
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED, report.problem))
            return ""
        caught = f"{len(report.caught)} of {report.run} mutants caught"
        extra = f"; {report.not_run} not run (time limit)" if report.not_run else ""
        if report.vacuous:
            s.ctx.step(f"check: mutation score {report.score}: the tests are vacuous", check="mutation",
                       ok="false", score=report.score)
            rnd.checks.append(Check("mutation", mut.TOOL, FAILED,
                                    f"score {report.score}: the tests are vacuous, {caught}{extra}"))
            survived = "\n".join(f"- {m.where()} {m.description}" for m in report.survived)
            return ("The tests pass, but they also pass when the code is deliberately broken, so they "
                    f"do not test it (mutation check: {caught}). Each of these changes to the code left "
                    f"every test passing:\n{survived}\nWrite real tests: call the code and assert on "
                    "exact expected results, so that such changes make a test fail; then answer with one "
                    "line.")
        s.ctx.step(f"check: mutation score {report.score}", check="mutation", ok="true", score=report.score)
        missed = ", ".join(f"{m.where()} {m.kind}" for m in report.survived[:4])
        rnd.checks.append(Check("mutation", mut.TOOL, PASSED, f"score {report.score}: {caught}{extra}"
                                + (f"; survived: {missed}" if missed else "")))
        return ""

    def _manifest(self, ws: Workspace) -> tuple[dict[str, object], str]:
        if not ws.exists(MANIFEST):
            return {}, (f"{MANIFEST} is missing: write it with the command that starts the service "
                        "and the routes to check.")
        try:
            m = json.loads(ws.read_text(MANIFEST))
        except json.JSONDecodeError as exc:
            return {}, f"{MANIFEST} is not valid JSON: {exc}"
        if not isinstance(m, dict):
            return {}, f"{MANIFEST} must hold a JSON object"
        problems = []
        start = m.get("start")
        if not isinstance(start, str) or ("{port}" not in start and "$PORT" not in start):
            problems.append('"start" must be a shell command containing {port}')
        routes = m.get("routes")
        if not isinstance(routes, list) or not routes or not all(
            isinstance(r, dict) and str(r.get("path", "")).startswith("/") for r in routes
        ):
            problems.append('"routes" must be a non-empty list of {"method", "path" (starting with /), "status"}')
        return m, (f"{MANIFEST}: " + "; ".join(problems)) if problems else ""

    async def _check_routes(
        self, s: Session, ws: Workspace, design: list[contract.Route]
    ) -> tuple[RouteCheck, contract.ContractReport | None]:
        """The routes of service.json, and the design's routes when there is a design (the contract),
        from one start of the service in the sandbox."""
        s.ctx.status("starting the service to check its routes")
        timeout = min(s.env.sandbox.limits.timeout_s, 45)
        argv = [sys.executable, "-c", PROBE, MANIFEST]
        if design:
            ws.write_text(CONTRACT_SCRATCH, json.dumps({"routes": [r.probe() for r in design]}))
            argv.append(CONTRACT_SCRATCH)
        try:
            result = await s.env.sandbox.run(argv, timeout_s=timeout)
        finally:
            if design:
                ws.resolve(CONTRACT_SCRATCH).unlink(missing_ok=True)
        line = next((ln for ln in reversed(result.stdout.splitlines()) if ln.startswith("ROUTE-REPORT ")), "")
        if not line:
            return RouteCheck(False, "the route check did not finish",
                              f"Checking the routes failed:\n{result.describe(4000)}"), None
        report = json.loads(line[len("ROUTE-REPORT "):])
        log_tail = str(report.get("log", ""))[-2000:]
        if not report.get("up"):
            how = (f"exited with code {report.get('exited')}" if report.get("exited") is not None
                   else "did not listen on its port within the start-up time")
            return RouteCheck(False, f"the service {how}",
                              f"The service started with `{report.get('command')}` {how}. Its output:\n"
                              f"{log_tail}\nFix the code or the start command in {MANIFEST}."), None
        agreed = (contract.judge(design, report.get("contract") or [], report.get("openapi"))
                  if design else None)
        return self._route_result(report, log_tail), agreed

    def _route_result(self, report: dict[str, Any], log_tail: str) -> RouteCheck:
        rows = report.get("routes", [])
        summary = ", ".join(f"{r['method']} {r['path']} {r.get('status')}" for r in rows)
        bad = [r for r in rows if not r.get("ok")]
        if not bad:
            return RouteCheck(True, summary, "")
        lines = "\n".join(
            f"- {r['method']} {r['path']}: expected {r.get('expected') or '< 400'}, got "
            f"{r.get('status') if r.get('status') is not None else r.get('error')}" for r in bad
        )
        return RouteCheck(False, summary, f"The tests pass, but these routes do not answer as declared in "
                          f"{MANIFEST}:\n{lines}\nService output:\n{log_tail}\nFix the code or {MANIFEST}.")

    # ---------------------------------------------------------------- result
    def _outcome(
        self, ctx: TaskContext, last: Round, rounds: int, tries: int, test_cmd: str, missing: list[str],
        notes: list[str], changed: list[str],
    ) -> Outcome:
        test, routes, report = last.test, last.routes, last.mutation
        passed = last.ok
        data = {
            "tests_passed": str(test is not None and test.ok).lower(),
            "test_command": test.command if test else test_cmd,
            "test_output": _tail(test.stdout + ("\n" + test.stderr if test.stderr.strip() else ""))
            if test else "",
            "test_exit_code": str(test.exit_code) if test else "",
            "rounds": str(rounds),
            "files": ", ".join(changed),
        }
        if routes is not None:
            data["routes_ok"] = str(routes.ok).lower()
            data["routes"] = routes.summary
        if report is not None and not report.problem:
            data["mutation_score"] = report.score
        if missing:
            data["missing_packages"] = ", ".join(missing)
        if test is not None and test.notes:
            data["sandbox_notes"] = "; ".join(test.notes)
        summary = summarize_tests(test) if test else "no tests ran"
        if passed:
            out = f"tests passed ({summary})"
            if report is not None and not report.problem:
                out += f"; mutation score {report.score}"
            if routes is not None:
                out += f"; routes answer: {routes.summary}"
            advisory = [c for c in last.checks if c.failed]
            if advisory:
                out += "; " + "; ".join(f"{c.name} check failed (advisory): {c.detail}" for c in advisory)
            out += f"; {len(changed)} files" + (f"; note: {'; '.join(notes)}" if notes else "")
            return attach(Outcome(output=out, data=data), last.checks)
        why = "tests failed" if test is not None and not test.ok else "the work is not finished"
        if routes is not None and not routes.ok:
            why = f"routes failed ({routes.summary})"
        elif test is not None and test.ok:
            failed = [c for c in last.checks if c.failed and c.required]
            if failed:
                why = "; ".join(f"{c.name} check failed: {c.detail}" for c in failed)
        return attach(Outcome(ok=False, output=f"{why} after {rounds} of {tries} round(s) ({summary})",
                              error=f"{why} after {rounds} round(s): {summary}", data=data), last.checks)


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    try:
        return int(options.get(name, "") or default)
    except ValueError:
        raise TaskFailed(f"option {name} must be a whole number, not {options[name]!r}") from None


def _test_tool(lang: Language, test_cmd: str) -> str:
    """The program that runs the tests, for the checks table ("pytest", "node", ...)."""
    if lang.name == "python" and (not test_cmd or "pytest" in test_cmd):
        return "pytest"
    try:
        words = shlex.split(test_cmd)
    except ValueError:
        words = test_cmd.split()
    return Path(words[0]).name if words else lang.tool


def _tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else "[... cut ...]\n" + text[-limit:]


