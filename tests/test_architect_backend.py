"""The architect and backend agents, driven by the scripted OpenAI-compatible server.

Real HTTP to the scripted model, real files, real sandboxed pytest runs and a real
service started in the sandbox. `Agent.run` is called directly with a TaskContext
whose events land in a list (the mesh wiring is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.agents.architect import ArchitectAgent, check_document, check_dot, check_mermaid
from agentd.agents.backend import BackendAgent, installed_python_packages
from agentd.runtime import Agent, Outcome, TaskContext, agent_class
from agentd.settings import AgentSettings
from orchgpt.checks import checks_of
from orchgpt.models import EventKind, Task, TaskEvent
from tests.support.scripted_openai import Response, ScriptedOpenAI, prompt_text, text, tool_call

TIMEOUT = 90

GOOD_DOC = """# Todo service

## Overview
A small HTTP API that stores todo items in memory.

## Components
- **api**: HTTP server (FastAPI) that validates requests and serves JSON.
- **store**: in-memory repository of todo items.

## Data model
- Todo: id (int), title (str), done (bool)

## Endpoints
| Method | Path | Request | Response | Description |
|---|---|---|---|---|
| GET | /todos | - | list of Todo | list the todos |
| POST | /todos | {title} | Todo | create a todo |
| GET | /health | - | {status} | liveness |
"""
DOC_WITHOUT_ENDPOINTS = GOOD_DOC.split("## Endpoints")[0]
GOOD_DIAGRAM = "flowchart LR\n    client([Client]) --> api[API server]\n    api --> store[(Todo store)]\n"


class Run:
    def __init__(self, tmp_path: Path, srv: ScriptedOpenAI, agent_type: str, text_: str,
                 options: dict[str, str] | None = None, **model_opts: Any) -> None:
        self.events: list[TaskEvent] = []
        self.settings = AgentSettings.for_endpoint(srv.base_url, api_key="sk-scripted",
                                                   workspace_root=tmp_path / "ws", **model_opts)
        self.settings.sandbox_timeout_s = 60
        self.ws = tmp_path / "ws" / "task1"
        self.ws.mkdir(parents=True, exist_ok=True)
        task = Task(task_id="task1", agent_type=agent_type, input=text_, language="python",
                           options=options or {})
        self.ctx = TaskContext(task, self.ws, f"{agent_type}-1", self.events.append, settings=self.settings)
        self.agent: Agent = agent_class(agent_type)(self.settings)

    async def __call__(self) -> Outcome:
        return await asyncio.wait_for(self.agent.run(self.ctx), TIMEOUT)

    def of(self, kind: EventKind) -> list[TaskEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as s:
        yield s


def write(path: str, content: str) -> Response:
    return tool_call("write_file", {"path": path, "content": content})


# ---------------------------------------------------------------- architect


def test_document_and_diagram_checks() -> None:
    assert check_document(GOOD_DOC) == []
    assert check_document(DOC_WITHOUT_ENDPOINTS) == ["ARCHITECTURE.md has no '## Endpoints' section"]
    assert check_mermaid(GOOD_DIAGRAM) == []
    assert "first line must name the diagram type" in check_mermaid("client --> api\napi --> db")[0]
    assert "never closed" in check_mermaid("flowchart LR\n  a[API --> b[DB]\n")[0]
    assert "no edge" in check_mermaid("flowchart LR\n  a[API]\n  b[DB]\n")[0]
    assert check_dot('digraph system {\n  api [label="API"];\n  api -> db;\n}\n') == []
    assert "must start with 'digraph" in check_dot("api -> db")[0]
    assert "never closed" in check_dot("digraph g {\n  api -> db;\n")[0]


async def test_architect_writes_checked_document_and_diagram(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(
        write("ARCHITECTURE.md", DOC_WITHOUT_ENDPOINTS),
        write("architecture.mmd", GOOD_DIAGRAM),
        text("Two components: an API and a store."),
        # After the check's feedback: the missing section.
        write("ARCHITECTURE.md", GOOD_DOC),
        text("API + in-memory store, three endpoints."),
    )
    run = Run(tmp_path, srv, "architect", "fastapi app")
    out = await run()
    assert out.ok, out.error
    assert (run.ws / "ARCHITECTURE.md").read_text() == GOOD_DOC
    assert (run.ws / "architecture.mmd").read_text() == GOOD_DIAGRAM
    assert out.output.startswith("wrote ARCHITECTURE.md (2 components, 3 endpoints) and architecture.mmd")
    assert out.data["diagram"] == "architecture.mmd" and out.data["endpoints"] == "3"
    # The check's complaint reached the model.
    feedback = srv.chat_requests[3]["messages"][-1]
    assert feedback["role"] == "user" and "no '## Endpoints' section" in feedback["content"]
    # Artifacts recorded (events and context) with sizes and hashes.
    arts = {e.artifact.path: e.artifact for e in run.of(EventKind.ARTIFACT) if e.artifact}
    assert {"ARCHITECTURE.md", "architecture.mmd"} <= set(arts)
    assert arts["ARCHITECTURE.md"].size == len(GOOD_DOC.encode()) and arts["ARCHITECTURE.md"].kind == "document"
    assert arts["architecture.mmd"].kind == "diagram"
    assert set(run.ctx.artifacts) == set(arts)
    # Steps streamed, tokens streamed, usage counted.
    steps = [e.text for e in run.of(EventKind.STEP)]
    assert any("write ARCHITECTURE.md" in s for s in steps)
    assert any(s.startswith("check: 1 problem(s)") for s in steps)
    assert "check: document and diagram are complete" in steps
    assert "three endpoints" in "".join(e.text for e in run.of(EventKind.TOKEN))
    assert run.ctx.usage.calls == 5
    assert "fastapi app" in prompt_text(srv.chat_requests[0])


async def test_architect_takes_files_from_a_plain_answer(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """A model without tool use answers with fenced blocks: the files are taken from them."""
    srv.push(text(f"Here is the design.\n\n```markdown\n{GOOD_DOC}```\n\n```mermaid\n{GOOD_DIAGRAM}```\n"))
    run = Run(tmp_path, srv, "architect", "todo service", tool_mode="compat")
    out = await run()
    assert out.ok, out.error
    assert (run.ws / "ARCHITECTURE.md").read_text() == GOOD_DOC
    assert (run.ws / "architecture.mmd").read_text() == GOOD_DIAGRAM


async def test_architect_gives_up_after_its_tries(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(write("ARCHITECTURE.md", GOOD_DOC), write("architecture.mmd", "boxes and arrows\napi to db\n"), text("done"),
             text("still done"))
    run = Run(tmp_path, srv, "architect", "x", options={"tries": "2"})
    out = await run()
    assert not out.ok and "incomplete after 2 round(s)" in out.error
    assert "first line must name the diagram type" in out.error
    assert len(srv.chat_requests) == 4


# ---------------------------------------------------------------- backend

SLUG_BUGGY = "def slugify(s: str) -> str:\n    return s.lower().replace(' ', '-')\n"
SLUG_FIXED = (
    "import re\n\n\ndef slugify(s: str) -> str:\n"
    "    return re.sub(r'[^a-z0-9]+', '-', s.lower()).strip('-')\n"
)
SLUG_TESTS = (
    "from slug import slugify\n\n\ndef test_spaces():\n    assert slugify('Hello World') == 'hello-world'\n\n\n"
    "def test_punctuation():\n    assert slugify('Hello, World!') == 'hello-world'\n"
)


async def test_backend_repairs_until_its_tests_pass(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(
        write("slug.py", SLUG_BUGGY),
        write("test_slug.py", SLUG_TESTS),
        text("Wrote slug.py and its tests."),
        write("slug.py", SLUG_FIXED),  # after seeing the failure
        text("Fixed the punctuation handling."),
    )
    run = Run(tmp_path, srv, "backend", "a slugify function", options={"web": "false"})
    out = await run()
    assert out.ok, (out.error, out.data.get("test_output"))
    assert out.data["tests_passed"] == "true"
    assert out.data["rounds"] == "2"
    assert "2 passed" in out.data["test_output"]
    assert out.output.startswith("tests passed (2 passed")
    assert "pytest" in out.data["test_command"]
    # Round 1 failed in the sandbox and the model saw pytest's failure output.
    feedback = srv.chat_requests[3]["messages"][-1]
    assert feedback["role"] == "user" and "The tests failed" in feedback["content"]
    assert "test_punctuation" in feedback["content"] and "hello,-world!" in feedback["content"]
    steps = [e.text for e in run.of(EventKind.STEP)]
    assert any(s.startswith("check: tests failed: 1 failed, 1 passed") for s in steps), steps
    assert any(s.startswith("check: tests passed: 2 passed") for s in steps), steps
    assert {"slug.py", "test_slug.py"} <= set(run.ctx.artifacts)
    assert run.ctx.artifacts["test_slug.py"].kind == "test"


async def test_backend_reports_failure_when_tries_run_out(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(write("slug.py", SLUG_BUGGY), write("test_slug.py", SLUG_TESTS), text("done"))
    run = Run(tmp_path, srv, "backend", "a slugify function", options={"tries": "1", "web": "false"})
    out = await run()
    assert not out.ok and out.data["tests_passed"] == "false"
    assert "tests failed after 1 of 1 round(s)" in out.output
    assert "tests failed after 1 round(s)" in out.error
    assert len(srv.chat_requests) == 3  # no repair round beyond the budget
    assert "1 failed" in out.data["test_output"]
    checks = {c.name: c for c in checks_of(out.data)}
    assert checks["tests"].outcome == "failed" and checks["tests"].detail.startswith("1 failed, 1 passed")
    assert checks["mutation"].outcome == "skipped"
    assert checks["mutation"].detail == "not run this round: the tests failed"


TODO_APP = '''import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TODOS: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/todos":
            return self._send(200, TODOS)
        #HEALTH
        self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/todos":
            return self._send(404, {"error": "not found"})
        n = int(self.headers.get("Content-Length") or 0)
        item = json.loads(self.rfile.read(n) or b"{}")
        todo = {"id": len(TODOS) + 1, "title": item.get("title", "")}
        TODOS.append(todo)
        self._send(201, todo)


def make_server(port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    make_server(int(sys.argv[1])).serve_forever()
'''
TODO_APP_FIXED = TODO_APP.replace(
    "#HEALTH", 'if self.path == "/health":\n            return self._send(200, {"status": "ok"})'
)
TODO_TESTS = '''import json
import threading
import urllib.request

from app import make_server


def test_create_and_list():
    srv = make_server(0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    req = urllib.request.Request(base + "/todos", data=json.dumps({"title": "milk"}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 201
    with urllib.request.urlopen(base + "/todos", timeout=5) as r:
        assert [t["title"] for t in json.load(r)] == ["milk"]
    srv.shutdown()
'''
MANIFEST = json.dumps({
    "start": "python app.py {port}",
    "routes": [
        {"method": "GET", "path": "/health", "status": 200},
        {"method": "GET", "path": "/todos", "status": 200},
        {"method": "POST", "path": "/todos", "status": 201, "body": {"title": "x"}},
    ],
})


async def test_backend_web_service_routes_answer(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """Tests pass, the service starts in the sandbox, a declared route is missing, then fixed."""
    srv.push(
        write("app.py", TODO_APP),
        write("test_app.py", TODO_TESTS),
        write("service.json", MANIFEST),
        text("Todo API written."),
        write("app.py", TODO_APP_FIXED),  # after the route check's complaint
        text("Added /health."),
    )
    run = Run(tmp_path, srv, "backend", "todo api with fastapi")
    # The architect's document in the shared workspace is part of the brief.
    (run.ws / "ARCHITECTURE.md").write_text(GOOD_DOC)
    out = await run()
    assert out.ok, (out.error, out.data)
    assert out.data["tests_passed"] == "true" and "1 passed" in out.data["test_output"]
    assert out.data["routes_ok"] == "true"
    assert out.data["routes"] == "GET /health 200, GET /todos 200, POST /todos 201"
    assert "routes answer: GET /health 200" in out.output
    first = srv.chat_requests[0]
    assert "| GET | /todos |" in prompt_text(first)  # the design reached the model
    assert "service.json" in prompt_text(first)
    complaint = srv.chat_requests[4]["messages"][-1]["content"]
    assert "GET /health: expected 200, got 404" in complaint
    _have, missing = installed_python_packages()
    if "fastapi" in missing:
        assert "fastapi" in out.data["missing_packages"]
        assert "fastapi is NOT installed" in prompt_text(first) or "NOT installed" in prompt_text(first)
    # Only the backend's own files are its artifacts, not the architect's document.
    assert "ARCHITECTURE.md" not in run.ctx.artifacts
    assert {"app.py", "test_app.py", "service.json"} <= set(run.ctx.artifacts)


async def test_backend_without_model_settings_fails_clearly(tmp_path: Path) -> None:
    ctx = TaskContext(Task(task_id="t", agent_type="backend", input="x"), tmp_path, "b", lambda e: None)
    from agentd.errors import TaskFailed

    with pytest.raises(TaskFailed, match="no model is configured"):
        await BackendAgent(None).run(ctx)
    assert ArchitectAgent.type == "architect"


# ---------------------------------------------------------------- checks no model wrote

ADD_WRONG = "def add(a, b):\n    return a - b\n"
ADD_RIGHT = "def add(a, b):\n    return a + b\n"
VACUOUS_TESTS = "def test_add():\n    assert True\n"
REAL_TESTS = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


async def test_backend_vacuous_tests_fail_the_mutation_check(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """`add` returns a - b and the only test is `assert True`: the tests pass, but no mutant is
    caught; the model is asked for real tests, never writes them, and the task fails naming the
    mutation check."""
    srv.push(write("calc.py", ADD_WRONG), write("test_calc.py", VACUOUS_TESTS), text("Done."),
             text("The tests pass."))
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false", "tries": "2"})
    out = await run()
    assert not out.ok, out.output
    assert out.data["tests_passed"] == "true"
    assert "mutation check failed" in out.error and "vacuous" in out.error, out.error
    assert out.data["mutation_score"].startswith("0/")
    checks = {c.name: c for c in checks_of(out.data)}
    assert checks["tests"].outcome == "passed" and checks["tests"].tool == "pytest"
    assert checks["mutation"].outcome == "failed" and checks["mutation"].tool == "agentd mutation"
    assert "the tests are vacuous" in checks["mutation"].detail
    # The model was told which broken copies its tests let through, and asked for real tests.
    feedback = srv.chat_requests[3]["messages"][-1]
    assert feedback["role"] == "user" and "deliberately broken" in feedback["content"]
    assert "calc.py:2 add: `a - b` -> `a + b`" in feedback["content"]
    assert len(srv.chat_requests) == 4
    # The workspace holds the model's files only (the mutants ran on a copy).
    assert (run.ws / "calc.py").read_text() == ADD_WRONG
    assert not (run.ws / ".orchgpt" / "mutants.json").exists()
    steps = [e.text for e in run.of(EventKind.STEP)]
    assert any(s.startswith("check: mutation score 0/") for s in steps), steps


async def test_backend_real_tests_get_a_mutation_score(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """A correct `add` with a real test: success, and the result states a mutation score > 0."""
    srv.push(write("calc.py", ADD_RIGHT), write("test_calc.py", REAL_TESTS), text("Done."))
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false"})
    out = await run()
    assert out.ok, (out.error, out.data)
    assert out.data["rounds"] == "1"
    caught, _, total = out.data["mutation_score"].partition(" ")[0].partition("/")
    assert int(caught) > 0 and int(total) >= int(caught)
    assert f"mutation score {out.data['mutation_score']}" in out.output
    checks = {c.name: c for c in checks_of(out.data)}
    assert checks["mutation"].outcome == "passed" and checks["mutation"].detail.startswith("score ")


ADD_LINT = "import os\n\n\ndef add(a, b):\n    return a + b\n"


async def test_backend_ruff_problems_go_back_to_the_model(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(write("calc.py", ADD_LINT), write("test_calc.py", REAL_TESTS), text("Done."),
             write("calc.py", ADD_RIGHT), text("Removed the unused import."))
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false"})
    out = await run()
    assert out.ok, (out.error, out.data)
    assert out.data["rounds"] == "2"
    feedback = srv.chat_requests[3]["messages"][-1]["content"]
    assert "ruff" in feedback and "calc.py:1:8 F401" in feedback and "`os` imported but unused" in feedback
    checks = {c.name: c for c in checks_of(out.data)}
    assert checks["ruff"].outcome == "passed" and checks["ruff"].tool == "ruff"
    assert checks["ruff"].detail == "no problems in 2 file(s) (rules E9,F)"
    assert [c.name for c in checks_of(out.data)] == ["tests", "ruff", "mutation", "contract"]
    assert checks_of(out.data)[3].detail == "not applicable: the task has no design (ARCHITECTURE.md)"


async def test_backend_ruff_is_advisory_when_rounds_run_out(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(write("calc.py", ADD_LINT), write("test_calc.py", REAL_TESTS), text("Done."))
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false", "tries": "1"})
    out = await run()
    assert out.ok, (out.error, out.data)
    ruff = next(c for c in checks_of(out.data) if c.name == "ruff")
    assert ruff.outcome == "failed" and not ruff.required and "F401" in ruff.detail
    assert "ruff check failed (advisory)" in out.output


FASTAPI_APP = """from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()
TODOS: dict[int, dict] = {}


class TodoIn(BaseModel):
    title: str


@app.get("/health")
def health():
    return {"status": "ok"}


@app.get("/todos")
def list_todos():
    return list(TODOS.values())


@app.post("/todos", status_code=201)
def create(item: TodoIn):
    todo = {"id": len(TODOS) + 1, "title": item.title, "done": False}
    TODOS[todo["id"]] = todo
    return todo
"""
FASTAPI_DELETE = """

@app.delete("/todos/{todo_id}", status_code=204)
def delete(todo_id: int):
    if TODOS.pop(todo_id, None) is None:
        raise HTTPException(404, "no such todo")
"""
FASTAPI_TESTS = """from fastapi.testclient import TestClient

from app import app

client = TestClient(app)


def test_create_and_list():
    r = client.post("/todos", json={"title": "milk"})
    assert r.status_code == 201 and r.json()["title"] == "milk"
    assert [t["title"] for t in client.get("/todos").json()] == ["milk"]
"""
FASTAPI_MANIFEST = json.dumps({
    "start": "python -m uvicorn app:app --host 127.0.0.1 --port {port}",
    "routes": [
        {"method": "GET", "path": "/health", "status": 200},
        {"method": "GET", "path": "/todos", "status": 200},
        {"method": "POST", "path": "/todos", "status": 201, "body": {"title": "x"}},
    ],
})
DOC_WITH_DELETE = GOOD_DOC + "| DELETE | /todos/{id} | - | - | delete a todo |\n"
needs_fastapi = pytest.mark.skipif("fastapi" in installed_python_packages()[1] or
                                   "uvicorn" in installed_python_packages()[1], reason="needs fastapi, uvicorn")


@needs_fastapi
async def test_backend_missing_declared_route_fails_the_contract(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """The design declares DELETE /todos/{id}; the service (and its own service.json) leave it out:
    the routes check passes, the contract check from the design fails, and the task fails naming it."""
    srv.push(write("app.py", FASTAPI_APP), write("test_app.py", FASTAPI_TESTS),
             write("service.json", FASTAPI_MANIFEST), text("Todo API written."))
    run = Run(tmp_path, srv, "backend", "todo api with fastapi", options={"tries": "1", "mutants": "0"})
    (run.ws / "ARCHITECTURE.md").write_text(DOC_WITH_DELETE)
    out = await run()
    assert not out.ok and out.data["routes_ok"] == "true", (out.output, out.data)
    assert "contract check failed" in out.error and "DELETE /todos/{id}: not in the schema" in out.error
    checks = {c.name: c for c in checks_of(out.data)}
    assert checks["contract"].outcome == "failed" and checks["contract"].tool == "ARCHITECTURE.md endpoints"
    assert checks["contract"].detail.startswith("3 of 4 declared route(s) served (judged by the service's "
                                                "OpenAPI schema)")
    assert checks["mutation"].outcome == "skipped"
    assert checks["mutation"].detail == "not run this round: the contract check(s) failed"
    assert [c.name for c in checks_of(out.data)] == ["tests", "ruff", "mutation", "routes", "contract"]
    assert not (run.ws / ".orchgpt" / "contract.json").exists()


@needs_fastapi
async def test_backend_contract_complaint_is_repaired(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(write("app.py", FASTAPI_APP), write("test_app.py", FASTAPI_TESTS),
             write("service.json", FASTAPI_MANIFEST), text("Todo API written."),
             write("app.py", FASTAPI_APP + FASTAPI_DELETE), text("Added DELETE."))
    run = Run(tmp_path, srv, "backend", "todo api with fastapi", options={"mutants": "0"})
    (run.ws / "ARCHITECTURE.md").write_text(DOC_WITH_DELETE)
    out = await run()
    assert out.ok, (out.error, out.data)
    complaint = srv.chat_requests[4]["messages"][-1]["content"]
    assert "declares routes that the service does not serve" in complaint
    assert "- DELETE /todos/{id}: not in the schema" in complaint
    contract = next(c for c in checks_of(out.data) if c.name == "contract")
    assert contract.outcome == "passed" and contract.detail.startswith("4 of 4 declared route(s) served")
