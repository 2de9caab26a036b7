"""The architect and backend agents, driven by the scripted OpenAI-compatible server.

Real HTTP to the scripted model, real files, real sandboxed pytest runs and a real
service started in the sandbox. `Agent.run` is called directly with a TaskContext
whose events land in a list (the mesh wiring is tested elsewhere).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.agents.architect import ArchitectAgent, check_document, check_dot, check_mermaid
from agentd.agents.backend import BackendAgent, installed_python_packages
from agentd.runtime import TaskContext
from orchgpt.checks import checks_of
from orchgpt.models import EventKind, Task
from tests.support import agent_run
from tests.support.agent_run import GOOD_DOC, Run, write
from tests.support.scripted_openai import ScriptedOpenAI, prompt_text, text

# The shared fixture (pytest finds a fixture by its name in the test's module).
srv = agent_run.srv

DOC_WITHOUT_ENDPOINTS = GOOD_DOC.split("## Endpoints")[0]
GOOD_DIAGRAM = "flowchart LR\n    client([Client]) --> api[API server]\n    api --> store[(Todo store)]\n"


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
    srv.push(
        write("ARCHITECTURE.md", GOOD_DOC),
        write("architecture.mmd", "boxes and arrows\napi to db\n"),
        text("done"),
        text("still done"),
    )
    run = Run(tmp_path, srv, "architect", "x", options={"tries": "2"})
    out = await run()
    assert not out.ok and "incomplete after 2 round(s)" in out.error
    assert "first line must name the diagram type" in out.error
    assert len(srv.chat_requests) == 4


# ---------------------------------------------------------------- backend

SLUG_BUGGY = "def slugify(s: str) -> str:\n    return s.lower().replace(' ', '-')\n"
SLUG_FIXED = "import re\n\n\ndef slugify(s: str) -> str:\n    return re.sub(r'[^a-z0-9]+', '-', s.lower()).strip('-')\n"
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
    checks = {c.name: c for c in checks_of(out)}
    assert checks["tests"].outcome == "failed" and checks["tests"].detail.startswith("1 failed, 1 passed")
    assert checks["mutation"].outcome == "skipped"
    assert checks["mutation"].detail == "not run this round: the tests failed"


TODO_APP = """import json
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
"""
TODO_APP_FIXED = TODO_APP.replace(
    "#HEALTH", 'if self.path == "/health":\n            return self._send(200, {"status": "ok"})'
)
TODO_TESTS = """import json
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
"""
MANIFEST = json.dumps(
    {
        "start": "python app.py {port}",
        "routes": [
            {"method": "GET", "path": "/health", "status": 200},
            {"method": "GET", "path": "/todos", "status": 200},
            {"method": "POST", "path": "/todos", "status": 201, "body": {"title": "x"}},
        ],
    }
)


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
