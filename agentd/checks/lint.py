"""ruff on the generated Python code, in the task's sandbox.

Only the rules that find bugs, not style: syntax errors (E9) and pyflakes (F:
undefined names, unused imports and variables, ...). ruff runs with ``--isolated``,
so a configuration file the model wrote is not read.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field

from ..sandbox import Sandbox
from ..workspace import Workspace

RULES = "E9,F"
TOOL = "ruff"
MAX_FILES = 300
SHOWN = 20  # problems shown to the model


@dataclass
class Problem:
    path: str
    line: int
    column: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column} {self.code} {self.message}"


@dataclass
class LintReport:
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    skipped: str = ""  # why ruff did not judge the code

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.problems

    def summary(self) -> str:
        if self.skipped:
            return self.skipped
        if not self.problems:
            return f"no problems in {self.files} file(s) (rules {RULES})"
        codes = sorted({p.code for p in self.problems})
        return (
            f"{len(self.problems)} problem(s) in {self.files} file(s): "
            + ", ".join(str(p) for p in self.problems[:3])
            + (f" (codes {', '.join(codes)})" if len(self.problems) > 3 else "")
        )

    def feedback(self) -> str:
        shown = "\n".join(f"- {p}" for p in self.problems[:SHOWN])
        more = f"\n- ... and {len(self.problems) - SHOWN} more" if len(self.problems) > SHOWN else ""
        return (
            f"ruff (rules {RULES}: syntax errors, undefined names, unused imports and variables) "
            f"found {len(self.problems)} problem(s) in the code:\n{shown}{more}\nFix them with "
            "write_file."
        )


def python_files(ws: Workspace) -> list[str]:
    return [p for p in ws.files() if p.endswith(".py") and not p.startswith(".") and "/." not in p]


def _relative(filename: str, files: list[str]) -> str:
    for p in sorted(files, key=len, reverse=True):
        if filename == p or filename.endswith("/" + p):
            return p
    return filename


async def run_ruff(sandbox: Sandbox, ws: Workspace, timeout_s: float = 60) -> LintReport:
    files = python_files(ws)[:MAX_FILES]
    if not files:
        return LintReport(skipped="not applicable: no Python files")
    if importlib.util.find_spec("ruff") is None:
        return LintReport(files=len(files), skipped="ruff is not installed on this agent (pip install ruff)")
    result = await sandbox.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            RULES,
            "--output-format",
            "json",
            "--",
            *files,
        ],
        timeout_s=timeout_s,
    )
    try:
        raw = json.loads(result.stdout or "null")
    except json.JSONDecodeError:
        raw = None
    if result.exit_code not in (0, 1) or not isinstance(raw, list):
        why = " ".join(result.describe(300).split())
        return LintReport(files=len(files), skipped=f"ruff did not run: {why}")
    problems = []
    for d in raw:
        loc = d.get("location") or {}
        problems.append(
            Problem(
                _relative(str(d.get("filename", "?")), files),
                int(loc.get("row") or 0),
                int(loc.get("column") or 0),
                str(d.get("code") or "syntax"),
                " ".join(str(d.get("message", "")).split()),
            )
        )
    return LintReport(problems, len(files))
