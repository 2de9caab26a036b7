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
from pathlib import Path

from ..checks import attach, fuzz
from ..checks import mutation as mut
from ..errors import TaskFailed
from ..loop import TOKEN_BUDGET
from ..runtime import Outcome, TaskContext, register
from ..sandbox import summarize_tests
from ..workspace import Workspace
from ._backend_checks import DOC, BackendChecks, Round, _tail
from ._backend_languages import (
    WEB_FRAMEWORKS,
    Language,
    installed_python_packages,
    language_for,
)
from ._backend_service import MANIFEST
from ._llm_agent import (
    LLMAgent,
    extract_files,
    project_context,
    record_artifacts,
    write_extracted,
)

DOC_LIMIT = 6000
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


@register
class BackendAgent(LLMAgent, BackendChecks):
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
                language=lang.name,
                hint=lang.hint,
                command=test_cmd or "the test command of service.json",
                packages=packages,
                web=WEB_RULES.format(manifest=MANIFEST) if web else "",
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
            text += (
                f" NOTE: {', '.join(absent)} is NOT installed, so write the service with the "
                "standard library (http.server) instead, keeping the same routes."
            )
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
        return fuzz.examples(ctx.task.options, ctx.log)

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
    def _outcome(
        self,
        ctx: TaskContext,
        last: Round,
        rounds: int,
        tries: int,
        test_cmd: str,
        missing: list[str],
        notes: list[str],
        changed: list[str],
    ) -> Outcome:
        test, routes, report = last.test, last.routes, last.mutation
        passed = last.ok
        data = {
            "tests_passed": str(test is not None and test.ok).lower(),
            "test_command": test.command if test else test_cmd,
            "test_output": _tail(test.stdout + ("\n" + test.stderr if test.stderr.strip() else "")) if test else "",
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
        return attach(
            Outcome(
                ok=False,
                output=f"{why} after {rounds} of {tries} round(s) ({summary})",
                error=f"{why} after {rounds} round(s): {summary}",
                data=data,
            ),
            last.checks,
        )
