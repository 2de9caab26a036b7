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

The languages (test commands, installed packages) are in `_backend_languages`;
``service.json``, the probe that starts the service and its route report in
`_backend_service`.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import FAILED, PASSED, SKIPPED, Check, attach, contract, fuzz, lint
from ..checks import mutation as mut
from ..errors import TaskFailed
from ..loop import TOKEN_BUDGET
from ..runtime import Outcome, TaskContext, register
from ..sandbox import SandboxResult, summarize_tests
from ..workspace import Workspace
from ._backend_languages import (
    WEB_FRAMEWORKS,
    Language,
    installed_python_packages,
    language_for,
    test_tool,
)
from ._backend_service import MANIFEST, RouteCheck, check_routes, read_manifest
from ._llm_agent import (
    LLMAgent,
    Session,
    extract_files,
    project_context,
    record_artifacts,
    write_extracted,
)

CHECK_ORDER = ("tests", "ruff", "mutation", "routes", "contract", "schemathesis")  # as the result lists them
DOC = "ARCHITECTURE.md"
DOC_LIMIT = 6000
OUTPUT_LIMIT = 8000
_WEB = re.compile(r"\b(api|rest|http|web|server|service|fastapi|flask|django|endpoints?|routes?|crud)\b", re.I)

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
        lang = language_for(ctx.task.language)
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

    @staticmethod
    def _fuzz_examples(ctx: TaskContext) -> int:
        """Cases per operation for schemathesis (option ``fuzz``; 0 when off or not installed)."""
        raw = ctx.task.options.get("fuzz", str(fuzz.DEFAULT_EXAMPLES)).strip() or "0"
        n = int(raw) if raw.isdigit() else fuzz.DEFAULT_EXAMPLES
        if n and fuzz.available():
            ctx.log(f"schemathesis check skipped: {fuzz.available()}")
            return 0
        return n

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
        tool = test_tool(lang, test_cmd)
        code = [p for p in ws.files() if not p.endswith((".md", ".mmd", ".dot", ".svg", ".txt"))]
        if not [p for p in code if p != MANIFEST]:
            s.ctx.step("check: no code was written", check="files", ok="false")
            return Round("No code files were written yet. Write the code and its tests with write_file.",
                         checks=[Check("tests", tool, FAILED, "no code was written")])
        manifest, bad = read_manifest(ws) if (web or not test_cmd) else ({}, "")
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
                routes, agreed, fuzzed = await check_routes(s, ws, design, self._fuzz_examples(s.ctx))
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
                if fuzzed is not None:
                    s.ctx.step(f"check: schemathesis: {fuzzed.check.detail}", check="schemathesis",
                               ok=str(not fuzzed.check.failed).lower())
                    rnd.checks.append(fuzzed.check)
                    problems += [fuzzed.feedback] if fuzzed.feedback else []
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


def _tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else "[... cut ...]\n" + text[-limit:]


