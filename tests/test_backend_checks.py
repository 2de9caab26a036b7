"""The backend agent's checks of what the model wrote, driven by the scripted model server: the
mutation check of its tests, ruff, and the architecture's routes as a contract of a real FastAPI
service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.agents.backend import installed_python_packages
from orchgpt.checks import checks_of
from orchgpt.models import EventKind
from tests.support import agent_run
from tests.support.agent_run import GOOD_DOC, Run, write
from tests.support.scripted_openai import ScriptedOpenAI, text

# The shared fixture (pytest finds a fixture by its name in the test's module).
srv = agent_run.srv

ADD_WRONG = "def add(a, b):\n    return a - b\n"
ADD_RIGHT = "def add(a, b):\n    return a + b\n"
VACUOUS_TESTS = "def test_add():\n    assert True\n"
REAL_TESTS = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


async def test_backend_vacuous_tests_fail_the_mutation_check(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """`add` returns a - b and the only test is `assert True`: the tests pass, but no mutant is
    caught; the model is asked for real tests, never writes them, and the task fails naming the
    mutation check."""
    srv.push(write("calc.py", ADD_WRONG), write("test_calc.py", VACUOUS_TESTS), text("Done."), text("The tests pass."))
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false", "tries": "2"})
    out = await run()
    assert not out.ok, out.output
    assert out.data["tests_passed"] == "true"
    assert "mutation check failed" in out.error and "vacuous" in out.error, out.error
    assert out.data["mutation_score"].startswith("0/")
    checks = {c.name: c for c in checks_of(out)}
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
    checks = {c.name: c for c in checks_of(out)}
    assert checks["mutation"].outcome == "passed" and checks["mutation"].detail.startswith("score ")


ADD_LINT = "import os\n\n\ndef add(a, b):\n    return a + b\n"


async def test_backend_ruff_problems_go_back_to_the_model(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(
        write("calc.py", ADD_LINT),
        write("test_calc.py", REAL_TESTS),
        text("Done."),
        write("calc.py", ADD_RIGHT),
        text("Removed the unused import."),
    )
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false"})
    out = await run()
    assert out.ok, (out.error, out.data)
    assert out.data["rounds"] == "2"
    feedback = srv.chat_requests[3]["messages"][-1]["content"]
    assert "ruff" in feedback and "calc.py:1:8 F401" in feedback and "`os` imported but unused" in feedback
    checks = {c.name: c for c in checks_of(out)}
    assert checks["ruff"].outcome == "passed" and checks["ruff"].tool == "ruff"
    assert checks["ruff"].detail == "no problems in 2 file(s) (rules E9,F)"
    assert [c.name for c in checks_of(out)] == ["tests", "ruff", "mutation", "contract"]
    assert checks_of(out)[3].detail == "not applicable: the task has no design (ARCHITECTURE.md)"


async def test_backend_ruff_is_advisory_when_rounds_run_out(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(write("calc.py", ADD_LINT), write("test_calc.py", REAL_TESTS), text("Done."))
    run = Run(tmp_path, srv, "backend", "an add function", options={"web": "false", "tries": "1"})
    out = await run()
    assert out.ok, (out.error, out.data)
    ruff = next(c for c in checks_of(out) if c.name == "ruff")
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
FASTAPI_MANIFEST = json.dumps(
    {
        "start": "python -m uvicorn app:app --host 127.0.0.1 --port {port}",
        "routes": [
            {"method": "GET", "path": "/health", "status": 200},
            {"method": "GET", "path": "/todos", "status": 200},
            {"method": "POST", "path": "/todos", "status": 201, "body": {"title": "x"}},
        ],
    }
)
DOC_WITH_DELETE = GOOD_DOC + "| DELETE | /todos/{id} | - | - | delete a todo |\n"
needs_fastapi = pytest.mark.skipif(
    "fastapi" in installed_python_packages()[1] or "uvicorn" in installed_python_packages()[1],
    reason="needs fastapi, uvicorn",
)


@needs_fastapi
async def test_backend_missing_declared_route_fails_the_contract(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """The design declares DELETE /todos/{id}; the service (and its own service.json) leave it out:
    the routes check passes, the contract check from the design fails, and the task fails naming it."""
    srv.push(
        write("app.py", FASTAPI_APP),
        write("test_app.py", FASTAPI_TESTS),
        write("service.json", FASTAPI_MANIFEST),
        text("Todo API written."),
    )
    run = Run(tmp_path, srv, "backend", "todo api with fastapi", options={"tries": "1", "mutants": "0"})
    (run.ws / "ARCHITECTURE.md").write_text(DOC_WITH_DELETE)
    out = await run()
    assert not out.ok and out.data["routes_ok"] == "true", (out.output, out.data)
    assert "contract check failed" in out.error and "DELETE /todos/{id}: not in the schema" in out.error
    checks = {c.name: c for c in checks_of(out)}
    assert checks["contract"].outcome == "failed" and checks["contract"].tool == "ARCHITECTURE.md endpoints"
    assert checks["contract"].detail.startswith(
        "3 of 4 declared route(s) served (judged by the service's OpenAPI schema)"
    )
    assert checks["mutation"].outcome == "skipped"
    assert checks["mutation"].detail == "not run this round: the contract check(s) failed"
    assert [c.name for c in checks_of(out)] == ["tests", "ruff", "mutation", "routes", "contract", "schemathesis"]
    assert not (run.ws / ".orchgpt" / "contract.json").exists()


@needs_fastapi
async def test_backend_contract_complaint_is_repaired(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(
        write("app.py", FASTAPI_APP),
        write("test_app.py", FASTAPI_TESTS),
        write("service.json", FASTAPI_MANIFEST),
        text("Todo API written."),
        write("app.py", FASTAPI_APP + FASTAPI_DELETE),
        text("Added DELETE."),
    )
    run = Run(tmp_path, srv, "backend", "todo api with fastapi", options={"mutants": "0"})
    (run.ws / "ARCHITECTURE.md").write_text(DOC_WITH_DELETE)
    out = await run()
    assert out.ok, (out.error, out.data)
    complaint = srv.chat_requests[4]["messages"][-1]["content"]
    assert "declares routes that the service does not serve" in complaint
    assert "- DELETE /todos/{id}: not in the schema" in complaint
    contract = next(c for c in checks_of(out) if c.name == "contract")
    assert contract.outcome == "passed" and contract.detail.startswith("4 of 4 declared route(s) served")
