"""The `checks` record of a result, and the backend's own checks (mutation, ruff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.checks import attach
from agentd.checks.mutation import KINDS, LIMIT, is_test_file, make_mutants, mutable_files
from agentd.runtime import Outcome
from agentd.workspace import Workspace
from orchgpt.checks import (
    FAILED,
    PASSED,
    SKIPPED,
    Check,
    checks_of,
    dumps,
    failed_required,
    loads,
    summary,
)

pytestmark = pytest.mark.timeout(60)


def test_checks_round_trip_as_compact_json() -> None:
    cs = [Check("mutation", "agentd mutation", PASSED, "score 3/3 (100%)"),
          Check("ruff", "ruff", FAILED, "1 problem:\n app.py:1 F401", required=False),
          Check("browser", "chromium", SKIPPED, "chromium is not installed")]
    text = dumps(cs)
    assert '", "' not in text and '": ' not in text  # compact separators
    assert json.loads(text)[1] == {"name": "ruff", "tool": "ruff", "outcome": "failed",
                                   "detail": "1 problem: app.py:1 F401", "required": False}
    assert loads(text) == cs and checks_of({"checks": text}) == cs
    assert checks_of({}) == [] and checks_of({"checks": "not json"}) == []
    assert failed_required(cs) == []  # the failed one is advisory
    assert summary(cs) == "3 checks: 1 passed, 1 failed, 1 skipped (ruff)"
    with pytest.raises(ValueError, match="outcome must be one of passed, failed, skipped"):
        Check("x", "y", "ok")
    with pytest.raises(ValueError, match="list of objects"):
        loads('{"name": "x"}')
    assert len(Check("x", "y", PASSED, "z" * 1000).detail) == 300


def test_a_failed_required_check_fails_the_outcome() -> None:
    ok = attach(Outcome(output="tests passed"), [Check("tests", "pytest", PASSED, "1 passed")])
    assert ok.ok and checks_of(ok.data)[0].name == "tests"
    bad = attach(Outcome(output="tests passed"),
                 [Check("tests", "pytest", PASSED, "1 passed"),
                  Check("mutation", "agentd mutation", FAILED, "0 of 3 mutants caught")])
    assert not bad.ok
    assert bad.error == "mutation check failed (agentd mutation): 0 of 3 mutants caught"
    assert "but mutation check failed" in bad.output
    advisory = attach(Outcome(output="done"), [Check("ruff", "ruff", FAILED, "E741", required=False)])
    assert advisory.ok


# ---------------------------------------------------------------- mutants

CODE = '''def add(a, b):
    """Sum."""
    return a - b


def clamp(x, lo, hi):
    if x < lo:
        return lo
    return min(x, hi)


def is_empty(s):
    return len(s) == 0


def first(items):
    if items:
        return items[0]
    return None


def noop():
    pass


if __name__ == "__main__":
    print(add(1, 2))
'''


def test_mutants_break_the_code_one_change_at_a_time() -> None:
    ms = make_mutants({"calc.py": CODE, "pkg/util.py": "X = 1 + 2\n"})
    kinds = [m.kind for m in ms]
    assert kinds[:5] == ["raise", "return", "arith", "compare", "condition"]  # taken in turn
    assert set(kinds) == set(KINDS) and len(ms) <= LIMIT
    by = {m.description: m for m in ms}
    assert "add: `a - b` -> `a + b`" in by and "return a + b" in by["add: `a - b` -> `a + b`"].source
    assert "clamp: `x < lo` -> `x >= lo`" in by
    assert "first: condition `items` negated" in by
    assert not any("clamp: condition" in d for d in by)  # the same as flipping `x < lo`
    assert "is_empty: `return len(s) == 0` -> `return not len(s) == 0`" in by
    assert "add: `return a - b` -> `return None`" in by
    raised = by["add: body raises RuntimeError"].source
    assert "'''Sum.'''" in raised or '"""Sum."""' in raised
    assert "raise RuntimeError" in raised
    for m in ms:
        assert m.path == "calc.py"  # module-level code and `if __name__` are left alone
        assert "print(add(1, 2))" in m.source and m.source != CODE
        compile(m.source, m.path, "exec")
    assert not any(m.description.startswith("noop") for m in ms)  # nothing to break
    assert len(make_mutants({"calc.py": CODE}, limit=3)) == 3
    assert make_mutants({"bad.py": "def f(:\n"}) == []


def test_test_files_are_not_mutated(tmp_path: Path) -> None:
    for name in ("app.py", "test_app.py", "app_test.py", "conftest.py", "tests/helpers.py", "notes.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("def f():\n    return 1\n")
    assert list(mutable_files(Workspace(tmp_path))) == ["app.py"]
    assert is_test_file("pkg/tests/x.py") and not is_test_file("pkg/app.py")
