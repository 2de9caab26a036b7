"""Issue 18, frontend: the page is loaded in headless Chromium against the running backend.
A page that throws in the browser, or whose API call fails, goes back to the model with the
browser's own words, and fails the task when the rounds run out; a good page passes with a
screenshot kept as an artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agentd.checks.browser import judge, unavailable
from orchgpt.checks import checks_of
from orchgpt.models import EventKind
from tests.support.scripted_openai import ScriptedOpenAI, text
from tests.support.team_script import INDEX, SCRIPT
from tests.test_team_frontend import project, run, srv, writes  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        bool(unavailable()) or shutil.which("node") is None, reason=unavailable() or "node is not installed"
    ),
]
THROWS = SCRIPT + "\ndocument.querySelector('#no-such-element').textContent = 'x';\n"
# A declared route, called in a way the service cannot take: its handler crashes.
BAD_CALL = SCRIPT + '\nfetch(`${API_BASE}/todos`, { method: "POST", body: "not json" });\n'


def test_judging_a_probe_report() -> None:
    ok = {"loaded": True, "text_chars": 12, "api": [{"method": "GET", "path": "/todos", "status": 200}]}
    assert judge(ok)[0] == []
    assert "1 of 1 API call(s) succeeded" in judge(ok)[1]
    bad = {**ok, "console_errors": ["x is not defined"], "api": [{"method": "GET", "path": "/a", "status": 500}]}
    assert judge(bad)[0] == ["console error in the browser: x is not defined", "the page's call GET /a answered 500"]
    assert judge({"loaded": False, "error": "TimeoutError: 20000ms"})[0] == [
        "the page did not load in Chromium: TimeoutError: 20000ms"
    ]
    assert judge({"loaded": True, "text_chars": 0})[0] == ["the page renders no text in the browser (an empty body)"]


def test_a_page_that_throws_goes_back_then_passes(srv: ScriptedOpenAI, project: Path) -> None:  # noqa: F811
    assert "load();" in SCRIPT
    srv.push(writes(INDEX, THROWS), text("UI written."), writes(INDEX, SCRIPT), text("Fixed."))
    out, events = run(srv, project)
    feedback = srv.chat_requests[2]["messages"][-1]["content"]
    assert "uncaught exception in the browser" in feedback and "textContent" in feedback
    assert out.ok, out.error
    browser = {c.name: c for c in checks_of(out)}["browser"]
    assert browser.outcome == "passed" and "API call(s) succeeded" in browser.detail
    shot = project / "screenshots" / "frontend.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "screenshots/frontend.png" in {
        e.artifact.path for e in events if e.kind == EventKind.ARTIFACT and e.artifact
    }


def test_a_failing_api_call_fails_the_task_naming_it(srv: ScriptedOpenAI, project: Path) -> None:  # noqa: F811
    assert BAD_CALL != SCRIPT
    srv.push(writes(INDEX, BAD_CALL), text("done"))
    out, _ = run(srv, project, tries=1)
    assert not out.ok and "after 1 round(s)" in out.error
    assert "in the browser: POST /todos" in out.error
    assert {c.name: c.outcome for c in checks_of(out)}["browser"] == "failed"
