"""The backend agent's checks of one round (BackendChecks, mixed into BackendAgent): the tests in
the sandbox, ruff, the mutation check of the tests and, for a web service, its routes and the
architecture's contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..checks import FAILED, PASSED, SKIPPED, Check, contract, lint
from ..checks import mutation as mut
from ..errors import TaskFailed
from ..runtime import TaskContext
from ..sandbox import SandboxResult, summarize_tests
from ..workspace import Workspace
from ._backend_languages import (
    Language,
    test_tool,
)
from ._backend_service import MANIFEST, RouteCheck, check_routes, read_manifest
from ._llm_agent import (
    Session,
)

CHECK_ORDER = ("tests", "ruff", "mutation", "routes", "contract", "schemathesis")  # as the result lists them
DOC = "ARCHITECTURE.md"

OUTPUT_LIMIT = 8000


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
        return self.test is not None and self.test.ok and not any(c.failed and c.required for c in self.checks)


def _tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else "[... cut ...]\n" + text[-limit:]


class BackendChecks:
    """The checks of a round (part of BackendAgent)."""

    if TYPE_CHECKING:  # provided by BackendAgent

        def _architecture(self, ctx: TaskContext, ws: Workspace) -> str: ...
        @staticmethod
        def _fuzz_examples(ctx: TaskContext) -> int: ...

    async def _check(
        self,
        s: Session,
        ws: Workspace,
        lang: Language,
        test_cmd: str,
        web: bool,
        cache: dict[str, mut.MutationReport],
    ) -> Round:
        """Run the checks on the model's work; the feedback for the model when something is left."""
        tool = test_tool(lang, test_cmd)
        code = [p for p in ws.files() if not p.endswith((".md", ".mmd", ".dot", ".svg", ".txt"))]
        if not [p for p in code if p != MANIFEST]:
            s.ctx.step("check: no code was written", check="files", ok="false")
            return Round(
                "No code files were written yet. Write the code and its tests with write_file.",
                checks=[Check("tests", tool, FAILED, "no code was written")],
            )
        manifest, bad = read_manifest(ws) if (web or not test_cmd) else ({}, "")
        if not test_cmd:
            test_cmd = str(manifest.get("test", "")) if isinstance(manifest, dict) else ""
            if not test_cmd:
                return Round(
                    (f'Write {MANIFEST} with a "test" command that runs the tests.' + bad),
                    checks=[Check("tests", tool, FAILED, f"no test command in {MANIFEST}")],
                )
        s.ctx.status("running the tests")
        test = await s.env.sandbox.run(test_cmd)
        s.env.report_isolation(test)
        passed = test.ok
        tail = test.describe(OUTPUT_LIMIT)
        if lang.name == "python" and test.exit_code == 5:
            s.ctx.step("check: no tests were collected", check="tests", ok="false")
            return Round(
                "pytest found no tests (exit code 5). Write tests in files named test_*.py with "
                "functions named test_*.",
                test,
                checks=[
                    Check("tests", tool, FAILED, "no tests were collected"),
                    Check("mutation", mut.TOOL, SKIPPED, "no tests to judge"),
                ],
            )
        s.ctx.step(
            f"check: tests {'passed' if passed else 'failed'}: {summarize_tests(test)}",
            check="tests",
            ok=str(passed).lower(),
            exit_code=str(test.exit_code),
        )
        rnd = Round(test=test, checks=[Check("tests", tool, PASSED if passed else FAILED, summarize_tests(test))])
        lint_problem = await self._check_lint(s, ws, lang, rnd)
        doc = self._architecture(s.ctx, ws)
        design = contract.design_routes(doc)
        if not passed:
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED, "not run this round: the tests failed"))
            if web:
                rnd.checks.append(Check("routes", f"{MANIFEST} probe", SKIPPED, "not run this round: the tests failed"))
            if web and design:
                rnd.checks.append(Check("contract", contract.TOOL, SKIPPED, "not run this round: the tests failed"))
            rnd.feedback = (
                f"The tests failed. Output:\n{tail}\n\nFind the cause and fix the code (or a "
                "wrong test) with write_file; then answer with one line."
            )
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
                s.ctx.step(
                    f"check: routes {'answer' if routes.ok else 'fail'}: {routes.summary}",
                    check="routes",
                    ok=str(routes.ok).lower(),
                )
                rnd.checks.append(Check("routes", f"{MANIFEST} probe", PASSED if routes.ok else FAILED, routes.summary))
                if not routes.ok:
                    problems.append(routes.problem)
                if agreed is not None:
                    s.ctx.step(f"check: contract: {agreed.summary()}", check="contract", ok=str(agreed.ok).lower())
                    rnd.checks.append(
                        Check("contract", contract.TOOL, PASSED if agreed.ok else FAILED, agreed.summary())
                    )
                    if not agreed.ok:
                        problems.append(contract.feedback(agreed))
                elif design:
                    rnd.checks.append(
                        Check("contract", contract.TOOL, SKIPPED, f"the service could not be checked: {routes.summary}")
                    )
                if fuzzed is not None:
                    s.ctx.step(
                        f"check: schemathesis: {fuzzed.check.detail}",
                        check="schemathesis",
                        ok=str(not fuzzed.check.failed).lower(),
                    )
                    rnd.checks.append(fuzzed.check)
                    problems += [fuzzed.feedback] if fuzzed.feedback else []
        if design and (not web or bad):
            why = (
                "not a web service (option web=false)"
                if not web
                else f"{MANIFEST} is not usable, so the service cannot be started"
            )
            rnd.checks.append(Check("contract", contract.TOOL, SKIPPED, why))
        elif not design:
            rnd.checks.append(
                Check(
                    "contract",
                    contract.TOOL,
                    SKIPPED,
                    "not applicable: "
                    + ("the design declares no endpoints" if doc else f"the task has no design ({DOC})"),
                )
            )
        # The costly check last, on work that passes the others (it changes anyway otherwise).
        failing = [c.name for c in rnd.checks if c.failed and c.required]
        if failing:
            rnd.checks.append(
                Check("mutation", mut.TOOL, SKIPPED, f"not run this round: the {' and '.join(failing)} check(s) failed")
            )
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
            rnd.checks.append(
                Check(
                    "ruff",
                    lint.TOOL,
                    SKIPPED,
                    f"not applicable: ruff checks Python, this is {lang.name}",
                    required=False,
                )
            )
            return ""
        s.ctx.status("ruff on the code")
        report = await lint.run_ruff(s.env.sandbox, ws, min(float(s.env.sandbox.limits.timeout_s), 60.0))
        outcome = SKIPPED if report.skipped else PASSED if report.ok else FAILED
        s.ctx.step(f"check: ruff: {report.summary()}", check="ruff", ok=str(report.ok).lower())
        rnd.checks.append(Check("ruff", lint.TOOL, outcome, report.summary(), required=False))
        return report.feedback() if report.problems else ""

    async def _check_mutation(
        self,
        s: Session,
        ws: Workspace,
        lang: Language,
        test_cmd: str,
        test: SandboxResult,
        rnd: Round,
        cache: dict[str, mut.MutationReport],
    ) -> str:
        """The mutation check (its Check added to the round); feedback when the tests are vacuous."""
        if lang.name != "python":
            rnd.checks.append(
                Check(
                    "mutation",
                    mut.TOOL,
                    SKIPPED,
                    f"not applicable: the mutation check breaks Python code, this is {lang.name}",
                )
            )
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
            report = await mut.run_mutants(s.env.sandbox, ws, mutants, test_cmd, per_mutant_s=per, total_s=total)
            cache[key] = report
        rnd.mutation = report
        if report.problem:
            s.ctx.step(f"check: mutation check could not judge: {report.problem}", check="mutation", ok="false")
            rnd.checks.append(Check("mutation", mut.TOOL, SKIPPED, report.problem))
            return ""
        caught = f"{len(report.caught)} of {report.run} mutants caught"
        extra = f"; {report.not_run} not run (time limit)" if report.not_run else ""
        if report.vacuous:
            s.ctx.step(
                f"check: mutation score {report.score}: the tests are vacuous",
                check="mutation",
                ok="false",
                score=report.score,
            )
            rnd.checks.append(
                Check("mutation", mut.TOOL, FAILED, f"score {report.score}: the tests are vacuous, {caught}{extra}")
            )
            survived = "\n".join(f"- {m.where()} {m.description}" for m in report.survived)
            return (
                "The tests pass, but they also pass when the code is deliberately broken, so they "
                f"do not test it (mutation check: {caught}). Each of these changes to the code left "
                f"every test passing:\n{survived}\nWrite real tests: call the code and assert on "
                "exact expected results, so that such changes make a test fail; then answer with one "
                "line."
            )
        s.ctx.step(f"check: mutation score {report.score}", check="mutation", ok="true", score=report.score)
        missed = ", ".join(f"{m.where()} {m.kind}" for m in report.survived[:4])
        rnd.checks.append(
            Check(
                "mutation",
                mut.TOOL,
                PASSED,
                f"score {report.score}: {caught}{extra}" + (f"; survived: {missed}" if missed else ""),
            )
        )
        return ""

    # ---------------------------------------------------------------- result


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    try:
        return int(options.get(name, "") or default)
    except ValueError:
        raise TaskFailed(f"option {name} must be a whole number, not {options[name]!r}") from None
