"""optimizer: refactors the backend into modules while its tests keep passing.

1. Runs the project's tests in the sandbox; when they fail already, it stops
   without touching anything.
2. Keeps a copy of every file, then lets the model refactor with the file
   tools (and run commands in the sandbox): split the code into modules, keep
   the behaviour and the public names the tests import; test files must not
   change.
3. Runs the tests again. Failing tests (or an edited test file) go back to the
   model, at most ``tries`` rounds; when they still fail, every file is
   restored as it was and files the model added are removed, and the tests
   are run once more to show the project is back to green.
4. When the project is a web service (``service.json``), the same checks the backend ran are
   run after refactoring: its routes, the design's contract and schemathesis
   (`_optimizer_service`); a failure goes back to the model like a failing test.

The test command: option ``test_command``, else the backend's (from its result
among the inputs, when it can run here), else pytest with agentd's interpreter.

Options: ``tries`` (default 2), ``test_command``.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

from ..checks import FAILED, PASSED, Check, attach
from ..loop import TOKEN_BUDGET
from ..runtime import Outcome, TaskContext, register
from ..sandbox import SandboxResult, summarize_tests
from ..workspace import Workspace, artifact_kind
from ._llm_agent import (
    LLMAgent,
    Session,
    extract_files,
    inputs_brief,
    record_artifacts,
    write_extracted,
)
from ._optimizer_service import service_checks
from ._team import input_of, project_dir

SNAPSHOT_LIMIT = 50_000_000  # bytes of files kept for a revert
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "-o", "addopts=")

SYSTEM = """You are the optimizer of a team of agents. Refactor the project's backend code into \
well-named modules (for example: models, storage, handlers or routes, app) without changing its \
behaviour.

- The tests must keep passing; they are run with `{command}`. Do NOT modify the test files \
({tests}).
- Keep every name the tests import available where they import it from (re-export it).
- Write each file whole with write_file; you may run commands (e.g. the tests) with run_command.
- When done, answer with one line naming the modules. The agent runs the tests itself and reverts \
everything if they fail."""


def _python_modules(ws: Workspace) -> list[str]:
    return [p for p in ws.files() if p.endswith(".py") and artifact_kind(p) != "test"]


@register
class OptimizerAgent(LLMAgent):
    type = "optimizer"
    capabilities = ("refactor", "modules", "tests")
    description = "refactors the backend into modules while its tests keep passing (reverts when they break)"

    async def run(self, ctx: TaskContext) -> Outcome:
        project_dir(ctx)
        opts = ctx.task.options
        tries = max(1, int(opts.get("tries", "2") or 2))
        ws = Workspace(ctx.workspace)
        command = self._test_command(ctx)
        async with self.session(ctx) as s:
            ctx.status("running the tests before refactoring")
            before = await self._test(s, command, "before")
            if not before.ok:
                return attach(
                    Outcome(
                        ok=False,
                        error=f"the tests fail before refactoring ({summarize_tests(before)}); nothing was changed",
                        data={"tests_before": "failed", "test_command": command, "test_output": before.describe(4000)},
                    ),
                    [Check("tests-before", "the test command", FAILED, summarize_tests(before))],
                )
            snapshot = self._snapshot(ws)
            tests = {p: h for p, (h, _) in snapshot.items() if artifact_kind(p) == "test"}
            modules_before = _python_modules(ws)
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": SYSTEM.format(command=command, tests=", ".join(tests) or "none")},
                {"role": "user", "content": self._brief(ctx, ws)},
            ]
            after: SandboxResult | None = None
            service: list[Check] = []
            problem = ""
            for rnd in range(1, tries + 1):
                ctx.status(f"refactoring (round {rnd} of {tries})")
                res = await s.loop.run(messages)
                messages = res.messages
                files = extract_files(res.content)
                if files:
                    write_extracted(ctx, {p: c for p, c in files.items() if p not in tests})
                edited = [p for p, h in tests.items() if not ws.exists(p) or ws.artifact(p).sha256 != h]
                if edited:
                    problem = f"the test files must not change: {', '.join(edited)}"
                    for p in edited:  # put them back before anything runs
                        ws.write_bytes(p, snapshot[p][1])
                    ctx.step(f"check: {problem}", check="tests_unchanged", ok="false")
                    feedback = f"You changed {', '.join(edited)}; they were restored. Refactor the code, not the tests."
                else:
                    ctx.status("running the tests after refactoring")
                    after = await self._test(s, command, f"after round {rnd}")
                    if after.ok:
                        service, bad = await service_checks(s, ws)
                        problem = "" if not bad else "the running service fails its checks after refactoring"
                        if not bad:
                            break
                        feedback = (
                            "The tests pass, but the service does not:\n"
                            + "\n\n".join(bad)
                            + "\n\nFix the refactoring with write_file, then answer with one line."
                        )
                    else:
                        problem = f"the tests fail after refactoring ({summarize_tests(after)})"
                        feedback = (
                            f"The tests fail now:\n{after.describe(6000)}\n\nFix the refactoring "
                            "(not the tests) with write_file, then answer with one line."
                        )
                if res.stopped == TOKEN_BUDGET or rnd == tries:
                    break
                messages.append({"role": "user", "content": feedback})
            if problem:
                reverted = self._restore(ws, snapshot)
                ctx.step(f"reverted {len(reverted)} file(s): {problem}", check="revert", ok="true")
                again = await self._test(s, command, "after the revert")
                return attach(
                    Outcome(
                        ok=False,
                        error=f"{problem}; the refactoring was reverted (tests "
                        f"{'pass' if again.ok else 'still fail'} after the revert)",
                        data={
                            "tests_before": "passed",
                            "tests_after": "failed" if service == [] else "passed",
                            "reverted": "true",
                            "tests_after_revert": "passed" if again.ok else "failed",
                            "test_command": command,
                            "reverted_files": ", ".join(reverted),
                        },
                    ),
                    [
                        Check("tests-before", "the test command", PASSED, summarize_tests(before)),
                        Check("refactoring", "the test command", FAILED, f"{problem}; reverted"),
                        *service,
                    ],
                )
        changed = [p for p in ws.files() if p not in snapshot or snapshot[p][0] != ws.artifact(p).sha256]
        record_artifacts(ctx, changed)
        modules_after = _python_modules(ws)
        new = [m for m in modules_after if m not in modules_before]
        summary = summarize_tests(after) if after else ""
        if not changed:
            out = f"nothing to refactor: no file changed; tests pass ({summary})"
        else:
            out = (
                f"refactored into {len(modules_after)} module(s) (was {len(modules_before)}; new: "
                f"{', '.join(new) or 'none'}); tests pass before and after ({summary})"
            )
        outcome = Outcome(
            output=out,
            data={
                "tests_before": "passed",
                "tests_after": "passed",
                "tests_passed": "true",
                "reverted": "false",
                "test_command": command,
                "modules": ", ".join(modules_after),
                "new_modules": ", ".join(new),
                "files": ", ".join(changed),
                "test_output": after.describe(4000) if after else "",
            },
        )
        return attach(
            outcome,
            [
                Check("tests-before", "the test command", PASSED, summarize_tests(before)),
                Check("tests-after", "the test command", PASSED, summary),
                *service,
            ],
        )

    # ---------------------------------------------------------------- helpers
    def _test_command(self, ctx: TaskContext) -> str:
        cmd = ctx.task.options.get("test_command", "").strip()
        if cmd:
            return cmd
        back = input_of(ctx, "backend")
        if back is not None and back.data.get("test_command"):
            cmd = back.data["test_command"]
            try:
                prog = shlex.split(cmd)[0]
            except (ValueError, IndexError):
                prog = ""
            if prog and ((os.path.isabs(prog) and os.path.exists(prog)) or not os.path.isabs(prog)):
                return cmd
        return shlex.join(PYTEST)

    async def _test(self, s: Session, command: str, when: str) -> SandboxResult:
        r = await s.env.sandbox.run(command)
        s.env.report_isolation(r)
        s.ctx.step(
            f"tests {when}: {'passed' if r.ok else 'failed'} ({summarize_tests(r)})",
            check="tests",
            ok=str(r.ok).lower(),
            exit_code=str(r.exit_code),
        )
        return r

    def _snapshot(self, ws: Workspace) -> dict[str, tuple[str, bytes]]:
        out: dict[str, tuple[str, bytes]] = {}
        total = 0
        for p in ws.files():
            data = ws.read_bytes(p)
            total += len(data)
            if total > SNAPSHOT_LIMIT:
                from ..errors import TaskFailed

                raise TaskFailed(
                    f"the project is larger than {SNAPSHOT_LIMIT // 1_000_000} MB; too large to refactor "
                    "with a safe revert"
                )
            out[p] = (ws.artifact(p).sha256, data)
        return out

    def _restore(self, ws: Workspace, snapshot: dict[str, tuple[str, bytes]]) -> list[str]:
        """Every file back as it was, files added since removed; returns the paths touched."""
        touched = []
        for p in list(ws.files()):
            if p not in snapshot:
                ws.resolve(p).unlink()
                touched.append(p)
        for p, (h, data) in snapshot.items():
            if not ws.exists(p) or ws.artifact(p).sha256 != h:
                ws.write_bytes(p, data)
                touched.append(p)
        return sorted(touched)

    def _brief(self, ctx: TaskContext, ws: Workspace) -> str:
        text = f"Refactor this project into modules: {ctx.task.input.strip() or '(no description given)'}"
        files = list(ws.files())
        text += "\n\nThe project's files: " + ", ".join(files[:80])
        for p in _python_modules(ws)[:6]:
            text += f"\n\n{p}:\n```python\n{ws.read_text(p, 8000)}\n```"
        for p in [f for f in files if artifact_kind(f) == "test"][:4]:
            text += f"\n\n{p} (a test: do not change it):\n```\n{ws.read_text(p, 6000)}\n```"
        earlier = inputs_brief(ctx, 2000)
        if earlier:
            text += f"\n\nResults of earlier steps of this project:\n{earlier}"
        return text
