"""The `checks` record of a result, and the backend's own checks (mutation, ruff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.checks import attach
from agentd.checks.contract import design_routes, judge
from agentd.checks.mutation import (
    KINDS,
    LIMIT,
    is_test_file,
    make_mutants,
    mutable_files,
    run_mutants,
)
from agentd.runtime import Outcome
from agentd.sandbox import Sandbox
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
    cs = [
        Check("mutation", "agentd mutation", PASSED, "score 3/3 (100%)"),
        Check("ruff", "ruff", FAILED, "1 problem:\n app.py:1 F401", required=False),
        Check("browser", "chromium", SKIPPED, "chromium is not installed"),
    ]
    text = dumps(cs)
    assert '", "' not in text and '": ' not in text  # compact separators
    assert json.loads(text)[1] == {
        "name": "ruff",
        "tool": "ruff",
        "outcome": "failed",
        "detail": "1 problem: app.py:1 F401",
        "required": False,
    }
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
    assert ok.ok and checks_of(ok)[0].name == "tests"
    bad = attach(
        Outcome(output="tests passed"),
        [
            Check("tests", "pytest", PASSED, "1 passed"),
            Check("mutation", "agentd mutation", FAILED, "0 of 3 mutants caught"),
        ],
    )
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


# ---------------------------------------------------------------- the contract from the design

DESIGN = """# Todo

## Endpoints
| Method | Path | Request | Response | Description |
|---|---|---|---|---|
| GET | /todos | - | list | list |
| POST | /todos/ | {title} | Todo | create |
| GET | /todos/{id} | - | Todo | one |
| DELETE | /todos/{id} | - | - | delete |
"""


def test_design_routes_and_the_contract_judgement() -> None:
    routes = design_routes(DESIGN)
    assert [str(r) for r in routes] == ["GET /todos", "POST /todos", "GET /todos/{id}", "DELETE /todos/{id}"]
    assert routes[1].probe() == {"method": "POST", "path": "/todos", "contract": True, "body": {}}
    assert routes[2].probe()["path"] == "/todos/1"
    assert design_routes("# Todo\n\n## Overview\nno endpoints here\n") == [] and design_routes("") == []
    # Judged by an OpenAPI schema: parameter names may differ, methods must match.
    schema = {"/todos": {"get": {}, "post": {}}, "/todos/{todo_id}": {"get": {}}}
    r = judge(routes, [{}] * 4, schema)
    assert not r.ok and r.missing == ["DELETE /todos/{id}: the path has only GET"]
    assert r.summary().startswith("3 of 4 declared route(s) served (judged by the service's OpenAPI schema)")
    # Judged by the answers: 405, or 404 on a fixed path, is a missing route; 404 on /todos/1 is unsure.
    rows = [{"status": 200}, {"status": 422}, {"status": 404}, {"status": 405}]
    r = judge(routes, rows, None)
    assert r.missing == ["DELETE /todos/{id}: 405"] and r.unsure == ["GET /todos/{id}: 404"]
    assert r.served == ["GET /todos", "POST /todos"]
    r = judge(routes[:1], [{"status": 404}], None)
    assert r.missing == ["GET /todos: 404"]
    r = judge(routes[:1], [{"status": None, "error": "URLError: refused"}], None)
    assert r.missing == ["GET /todos: no answer (URLError: refused)"]


# ---------------------------------------------------------------- mutants in the sandbox

LOOP = "def countdown(n):\n    while n > 0:\n        n -= 1\n    return n\n"
CHECK_SCRIPT = "from loop import countdown\n\nassert countdown(3) == 0\n"


async def test_mutants_run_in_the_sandbox_with_a_test_command_and_a_time_limit(tmp_path: Path) -> None:
    """A test command of the model's own (not pytest) runs once per mutant on a copy of the project;
    a mutant that loops forever is caught by its time limit; the workspace is left as it was."""
    (tmp_path / "loop.py").write_text(LOOP)
    (tmp_path / "check.py").write_text(CHECK_SCRIPT)
    ws = Workspace(tmp_path)
    mutants = make_mutants(mutable_files(ws))
    assert {m.path for m in mutants} == {"loop.py"}  # check.py has no function to break
    report = await run_mutants(Sandbox(tmp_path), ws, mutants, "python check.py", per_mutant_s=3, total_s=40)
    assert not report.problem, report.problem
    assert report.run == len(mutants) and not report.vacuous
    assert any(m.description == "countdown: `n -= 1` -> `n += 1`" for m in report.caught)  # timed out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".orchgpt", "check.py", "loop.py"]
    assert (tmp_path / "loop.py").read_text() == LOOP and not any((tmp_path / ".orchgpt").iterdir())


async def test_tests_that_fail_on_the_copy_cannot_judge_mutants(tmp_path: Path) -> None:
    (tmp_path / "loop.py").write_text(LOOP)
    ws = Workspace(tmp_path)
    report = await run_mutants(
        Sandbox(tmp_path), ws, make_mutants(mutable_files(ws)), "exit 3", per_mutant_s=3, total_s=20
    )
    assert report.problem.startswith("the tests do not pass in a copy of the project (exit 3)")
    assert not report.vacuous and report.run == 0


def test_the_managers_summary_of_a_results_checks() -> None:
    from agentd.agents._team import checks_of as team_checks_of
    from orchgpt.models import TaskResult, TaskState

    data = {
        "tests_passed": "true",
        "routes_ok": "true",
        "checks": dumps(
            [
                Check("tests", "pytest", PASSED, "1 passed"),
                Check("routes", "probe", PASSED, "x"),
                Check("mutation", "agentd mutation", PASSED, "score 3/3"),
                Check("contract", "ARCHITECTURE.md endpoints", SKIPPED, "no design"),
            ]
        ),
    }
    r = TaskResult("t", TaskState.SUCCEEDED, data=data)
    assert team_checks_of(r) == "tests passed; routes answer; mutation passed, contract skipped"
    legacy = TaskResult("t", TaskState.SUCCEEDED, data={"checks": "design spec complete"})
    assert team_checks_of(legacy) == "design spec complete"


async def test_no_time_for_any_mutant_is_not_a_score(tmp_path: Path) -> None:
    (tmp_path / "loop.py").write_text(LOOP)
    (tmp_path / "check.py").write_text(CHECK_SCRIPT)
    ws = Workspace(tmp_path)
    report = await run_mutants(
        Sandbox(tmp_path), ws, make_mutants(mutable_files(ws)), "python check.py", per_mutant_s=3, total_s=5
    )  # the budget is gone after the baseline
    assert report.run == 0 and report.not_run == len(report.mutants) > 0
    assert report.problem == "no mutant could run within the time limit (5s)" and not report.vacuous
