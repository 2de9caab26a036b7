"""The frontend agent and its checks: page references, node --check, API calls against the backend's routes.

The model is the scripted server; node and the backend run for real in the sandbox.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.agents._team_web import (
    ApiCall,
    Route,
    api_calls,
    declared_routes,
    match_route,
    page_refs,
    routes_from_manifest,
    routes_from_text,
)
from agentd.agents.frontend import FrontendAgent
from agentd.checks.browser import unavailable
from agentd.runtime import Outcome, TaskContext
from agentd.settings import AgentSettings
from orchgpt.checks import checks_of
from orchgpt.models import EventKind, Task, TaskEvent, TaskResult, TaskState
from tests.support.scripted_openai import ScriptedOpenAI, prompt_text, text, tool_calls
from tests.support.team_script import APP, ARCHITECTURE, DESIGN, INDEX, MANIFEST, SCRIPT, STYLES

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- static analysis


def test_api_calls_through_fetch_wrappers_constants_and_templates() -> None:
    calls = [(c.method, c.path) for c in api_calls(SCRIPT)]
    assert calls == [("GET", "/todos"), ("DELETE", "/todos/{}"), ("POST", "/todos")]
    js = """
    const BASE = 'http://localhost:8000/';
    const API = "/api";
    fetch(BASE + 'health');
    fetch(`${API}/items?limit=5`, { method: 'put' });
    fetch(API + "/items/" + id, {method: "DELETE"});
    const call = async (method, url, body) => fetch(url, { method, body });
    call('PATCH', '/items/1');
    fetch(someUrl);
    async function get(p, o = {}) {
      const r = await fetch(API + p, o);
      return r.json();
    }
    get('/things', {method: 'POST'});
    const v1 = x => fetch(`${BASE}v1${x}`);
    v1('/q');
    """
    got = [(c.method, c.path) for c in api_calls(js)]
    assert got == [
        ("GET", "/health"),
        ("PUT", "/api/items"),
        ("DELETE", "/api/items/{}"),
        ("PATCH", "/items/1"),
        ("GET", ""),
        ("POST", "/api/things"),
        ("GET", "/v1/q"),
    ]


def test_routes_and_matching() -> None:
    routes = declared_routes(routes_from_manifest(MANIFEST), routes_from_text(ARCHITECTURE, "ARCHITECTURE.md"))
    assert {(r.method, r.path) for r in routes} == {
        ("GET", "/health"),
        ("GET", "/todos"),
        ("POST", "/todos"),
        ("DELETE", "/todos/{id}"),
    }
    hit, _ = match_route(ApiCall("DELETE", "/todos/{}", "", 1), routes)
    assert hit == Route("DELETE", "/todos/{id}", "ARCHITECTURE.md")
    assert match_route(ApiCall("PUT", "/todos/{}", "", 1), routes) == (None, ["DELETE"])
    assert match_route(ApiCall("GET", "/items", "", 1), routes) == (None, [])


def test_page_references() -> None:
    refs, inline, tags = page_refs(INDEX)
    assert refs == [("stylesheet", "styles.css"), ("script", "app.js")] and inline == [] and tags > 5
    refs, inline, _ = page_refs(
        '<script src="https://cdn.example/x.js"></script><img src="img/a.png?v=2"><script>fetch("/a")</script>'
    )
    assert refs == [("img", "img/a.png")] and inline == ['fetch("/a")']


# ---------------------------------------------------------------- the agent

BAD_INDEX = INDEX.replace("styles.css", "main.css")
BAD_SCRIPT = SCRIPT.replace('api("/todos", { method: "POST"', 'api("/items", { method: "POST"').replace(
    "load();\n", "load(;\n", 1
)


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "ws" / "proj"
    p.mkdir(parents=True)
    for name, content in {
        "ARCHITECTURE.md": ARCHITECTURE,
        "DESIGN.md": DESIGN,
        "service.json": MANIFEST,
        "app.py": APP,
    }.items():
        (p / name).write_text(content)
    return p


def run(
    srv: ScriptedOpenAI, project: Path, inputs: list[TaskResult] | None = None, tries: int = 3
) -> tuple[Outcome, list[TaskEvent]]:
    settings = AgentSettings.for_endpoint(srv.base_url, api_key="sk-scripted", workspace_root=project.parent)
    events: list[TaskEvent] = []
    own = project.parent / "fe1"
    own.mkdir()
    ctx = TaskContext(
        Task(
            task_id="fe1",
            agent_type="frontend",
            input="todo app web page",
            options={"workspace": project.name, "tries": str(tries)},
            inputs=inputs or [],
        ),
        own,
        "frontend-1",
        events.append,
        settings=settings,
    )
    out = asyncio.run(asyncio.wait_for(FrontendAgent(settings).run(ctx), 80))
    return out, events


def writes(index: str, script: str) -> object:
    return tool_calls(
        ("write_file", {"path": "frontend/index.html", "content": index}),
        ("write_file", {"path": "frontend/styles.css", "content": STYLES}),
        ("write_file", {"path": "frontend/app.js", "content": script}),
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_problems_go_back_to_the_model_until_the_ui_passes(srv, project) -> None:  # type: ignore[no-untyped-def]
    backend = TaskResult(
        "b1",
        TaskState.SUCCEEDED,
        agent_type="backend",
        output="tests passed",
        data={"routes": "GET /health 200, GET /todos 200, POST /todos 201"},
    )
    srv.push(writes(BAD_INDEX, BAD_SCRIPT), text("UI written."), writes(INDEX, SCRIPT), text("Fixed."))
    out, events = run(srv, project, [backend])
    assert out.ok, (out.error, out.data)
    brief = prompt_text(srv.chat_requests[0])
    assert "- DELETE /todos/{id}" in brief and "- POST /todos" in brief and "#1F6FEB" in brief
    feedback = srv.chat_requests[2]["messages"][-1]["content"]
    assert "loads 'main.css' (stylesheet), which does not exist in frontend/" in feedback
    assert "frontend/app.js has a syntax error (node --check)" in feedback
    assert "POST /items" in feedback and "the backend declares no such route" in feedback
    checks = {c.name: c for c in checks_of(out)}
    assert checks["syntax"].detail == "1 of 1 script(s) pass node --check"
    assert checks["api-routes"].detail == "3 API call(s) match the backend's routes"
    assert checks["live"].detail == "live: GET /todos 200"  # the backend was started in the sandbox and answered
    browser = not unavailable()
    assert checks["browser"].outcome == ("passed" if browser else "skipped"), checks["browser"].detail
    arts = {e.artifact.path for e in events if e.kind == EventKind.ARTIFACT and e.artifact}
    shots = {"screenshots/frontend.png"} if browser else set()
    assert arts == {"frontend/index.html", "frontend/styles.css", "frontend/app.js", *shots}
    assert (project / "frontend" / "app.js").read_text() == SCRIPT
    assert not (project.parent / "fe1").exists()  # it worked in the project, not its own directory


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_gives_up_after_its_tries_with_the_problems(srv, project) -> None:  # type: ignore[no-untyped-def]
    wrong = SCRIPT.replace('`/todos/${t.id}`, { method: "DELETE" }', '`/todos/${t.id}`, { method: "PUT" }')
    srv.push(writes(INDEX, wrong), text("done"), writes(INDEX, wrong), text("done"), writes(INDEX, wrong), text("d"))
    out, _ = run(srv, project)
    assert not out.ok and "after 3 round(s)" in out.error
    assert "PUT /todos/{}" in out.error and "declares only DELETE for this path" in out.error
