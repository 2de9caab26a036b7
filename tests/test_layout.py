"""The daemon package's layout rules (issue 12): it does not import the agent package, and
no module outside generated code is over 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ORCHGPT = Path(__file__).resolve().parents[1] / "orchgpt"
GENERATED = ORCHGPT / "iac"
MAX_LINES = 450


def test_no_daemon_module_imports_the_agent_package() -> None:
    offenders = []
    for path in sorted(ORCHGPT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.relative_to(ORCHGPT.parent)}:{node.lineno}"
                          for n in names if n == "agentd" or n.startswith("agentd.")]
    assert offenders == []





def test_no_daemon_module_is_over_450_lines() -> None:
    over = {str(p.relative_to(ORCHGPT.parent)): n for p in sorted(ORCHGPT.rglob("*.py"))
            if GENERATED not in p.parents and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert over == {}
