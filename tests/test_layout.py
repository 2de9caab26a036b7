"""The layout rules (issue 12): the daemon package does not import the agent package, and no
module outside generated code is over 450 lines, in the programs, the benchmarks, the scripts
and the tests alike."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORCHGPT = ROOT / "orchgpt"
GENERATED = ORCHGPT / "iac"
MAX_LINES = 450
# Every Python module of these is held to MAX_LINES (the lead's final `ruff format` keeps them so:
# scripts/format-tree.sh runs this test after formatting).
CHECKED = ("orchgpt", "agentd", "cli", "bench", "scripts", "tests")


def _modules() -> list[Path]:
    """The project's own modules: not generated code, not a virtualenv or cache below them."""
    return [
        p
        for d in CHECKED
        for p in sorted((ROOT / d).rglob("*.py"))
        if GENERATED not in p.parents
        and "_pb2" not in p.name
        and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(ROOT).parts)
    ]


def test_no_daemon_module_imports_the_agent_package() -> None:
    offenders = []
    for path in sorted(ORCHGPT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [
                f"{path.relative_to(ORCHGPT.parent)}:{node.lineno}"
                for n in names
                if n == "agentd" or n.startswith("agentd.")
            ]
    assert offenders == []


def test_no_module_is_over_450_lines() -> None:
    modules = _modules()
    assert {p.relative_to(ROOT).parts[0] for p in modules} == set(CHECKED)  # the walk found them all
    over = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert over == {}
