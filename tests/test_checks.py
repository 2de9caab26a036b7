"""The `checks` record of a result, and the backend's own checks (mutation, ruff)."""

from __future__ import annotations

import json

import pytest

from agentd.checks import attach
from agentd.runtime import Outcome
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
