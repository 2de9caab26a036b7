"""The optimizer: a real sandboxed pytest run before and after, a revert when the tests break.

Agent.run is called directly with a TaskContext; the model is the scripted server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.agents.optimizer import OptimizerAgent
from agentd.runtime import Outcome, TaskContext
from agentd.settings import AgentSettings
from orchgpt.models import EventKind, Task, TaskEvent
from tests.support.scripted_openai import ScriptedOpenAI, text, tool_call, tool_calls
from tests.support.team_script import APP, APP_SPLIT, APP_TESTS, STORE

pytestmark = pytest.mark.timeout(90)

APP_BROKEN = APP.replace("def make_server(", "def build_server(")


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "ws" / "proj"
    p.mkdir(parents=True)
    (p / "app.py").write_text(APP)
    (p / "test_app.py").write_text(APP_TESTS)
    return p


def run(srv: ScriptedOpenAI, project: Path, options: dict[str, str] | None = None) -> tuple[Outcome, list[TaskEvent]]:
    settings = AgentSettings.for_endpoint(srv.base_url, api_key="sk-scripted", workspace_root=project.parent)
    events: list[TaskEvent] = []
    ctx = TaskContext(
        Task(
            task_id="opt1",
            agent_type="optimizer",
            input="split the todo api into modules",
            options={"workspace": project.name, **(options or {})},
        ),
        project.parent / "opt1",
        "optimizer-1",
        events.append,
        settings=settings,
    )
    (project.parent / "opt1").mkdir()
    out = asyncio.run(asyncio.wait_for(OptimizerAgent(settings).run(ctx), 80))
    return out, events


def steps(events: list[TaskEvent]) -> list[str]:
    return [e.text for e in events if e.kind == EventKind.STEP]


def test_refactors_into_modules_with_the_tests_passing_before_and_after(srv, project) -> None:  # type: ignore[no-untyped-def]
    srv.push(
        tool_calls(
            ("write_file", {"path": "store.py", "content": STORE}),
            ("write_file", {"path": "app.py", "content": APP_SPLIT}),
        ),
        text("Split the store out of app.py."),
    )
    out, events = run(srv, project)
    assert out.ok, (out.error, out.data)
    assert out.data["tests_before"] == "passed" and out.data["tests_after"] == "passed"
    assert out.data["new_modules"] == "store.py" and "app.py" in out.data["modules"]
    assert "refactored into 2 module(s) (was 1; new: store.py); tests pass before and after (2 passed" in out.output
    assert (project / "store.py").read_text() == STORE and (project / "app.py").read_text() == APP_SPLIT
    assert (project / "test_app.py").read_text() == APP_TESTS
    s = steps(events)
    assert s[0].startswith("tests before: passed (2 passed") and any(
        x.startswith("tests after round 1: passed") for x in s
    )
    arts = {e.artifact.path for e in events if e.kind == EventKind.ARTIFACT and e.artifact}
    assert arts == {"store.py", "app.py"}
    assert "from app import make_server" in srv.chat_requests[0]["messages"][1]["content"]


def test_reverts_when_the_tests_keep_failing(srv, project) -> None:  # type: ignore[no-untyped-def]
    srv.push(
        tool_calls(
            ("write_file", {"path": "server.py", "content": "x = 1\n"}),
            ("write_file", {"path": "app.py", "content": APP_BROKEN}),
        ),
        text("Renamed the factory."),
        tool_call("write_file", {"path": "app.py", "content": APP_BROKEN + "\n# still\n"}),
        text("Tried again."),
    )
    out, events = run(srv, project, {"tries": "2"})
    assert not out.ok
    assert "the tests fail after refactoring" in out.error and "reverted (tests pass after the revert)" in out.error
    assert out.data["reverted"] == "true" and out.data["tests_after_revert"] == "passed"
    assert (project / "app.py").read_text() == APP and not (project / "server.py").exists()
    assert out.data["reverted_files"] == "app.py, server.py"
    feedback = srv.chat_requests[2]["messages"][-1]["content"]
    assert "The tests fail now" in feedback and "make_server" in feedback
    assert any(x.startswith("reverted 2 file(s)") for x in steps(events))


def test_an_edited_test_file_is_restored_and_not_accepted(srv, project) -> None:  # type: ignore[no-untyped-def]
    srv.push(
        tool_call("write_file", {"path": "test_app.py", "content": "def test_nothing():\n    pass\n"}),
        text("Simplified the tests."),
    )
    out, _ = run(srv, project, {"tries": "1"})
    assert not out.ok and "the test files must not change: test_app.py" in out.error
    assert (project / "test_app.py").read_text() == APP_TESTS


def test_failing_tests_before_stop_without_asking_the_model(srv, project) -> None:  # type: ignore[no-untyped-def]
    (project / "app.py").write_text(APP_BROKEN)
    out, _ = run(srv, project)
    assert not out.ok and "the tests fail before refactoring" in out.error and "nothing was changed" in out.error
    assert srv.chat_requests == []
    assert (project / "app.py").read_text() == APP_BROKEN
