"""Issue 18, backend: property-based API testing with schemathesis against the service's own
OpenAPI schema. A FastAPI service that answers 500 to some valid input is caught, the failing
request goes back to the model, and the repaired service passes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agentd.checks.fuzz import judge
from orchgpt.checks import checks_of
from tests.support.scripted_openai import ScriptedOpenAI, text
from tests.test_architect_backend import Run, srv, write  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(150)
needs = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("schemathesis", "fastapi", "uvicorn")),
    reason="schemathesis, fastapi and uvicorn are needed ('.[dev]')",
)

APP = """from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    title: str
    qty: int


ITEMS: list[Item] = []


@app.get("/items")
def list_items() -> list[Item]:
    return ITEMS


@app.post("/items", status_code=201)
def add(item: Item) -> Item:
    if item.qty < 0:
        raise RuntimeError("negative stock")  # a valid input the code never expected: 500
    ITEMS.append(item)
    return item
"""
FIXED = APP.replace("    qty: int\n", "    qty: int = Field(ge=0)\n").replace(
    "from pydantic import BaseModel", "from pydantic import BaseModel, Field"
)
TESTS = """from fastapi.testclient import TestClient

from app import app


def test_add_and_list():
    c = TestClient(app)
    assert c.post("/items", json={"title": "milk", "qty": 2}).status_code == 201
    assert c.get("/items").json() == [{"title": "milk", "qty": 2}]
"""
MANIFEST = json.dumps(
    {
        "start": "python -m uvicorn app:app --port {port}",
        "routes": [{"method": "GET", "path": "/items", "status": 200}],
    }
)


def test_judging_schemathesis_output() -> None:
    out = (
        "=== FAILURES ===\n______ POST /items ______\n1. Test Case ID: x\n\n- ST101 Server error\n\n"
        "[500] Internal Server Error\n\n    curl -X POST http://h/items\n=== SUMMARY ===\n"
        "Test cases:\n  32 generated, 1 found 1 unique failure\n"
    )
    bad = judge({"rc": 1, "out": out})
    assert bad.check.outcome == "failed"
    assert bad.check.detail == "32 cases generated, 1 found 1 unique failure; POST /items: ST101 Server error"
    assert "curl -X POST http://h/items" in bad.feedback and "SUMMARY" not in bad.feedback
    good = judge({"rc": 0, "out": "Test cases:\n  51 generated, 51 passed\n"})
    assert good.check.outcome == "passed" and good.check.detail == "51 cases generated, 51 passed"
    assert judge({"skipped": "no schema"}).check.outcome == "skipped"


@needs
async def test_a_service_that_500s_is_caught_and_repaired(tmp_path: Path, srv: ScriptedOpenAI) -> None:  # noqa: F811
    srv.push(
        write("app.py", APP),
        write("test_app.py", TESTS),
        write("service.json", MANIFEST),
        text("Items API written."),
        write("app.py", FIXED),
        text("Validated qty."),
    )
    run = Run(tmp_path, srv, "backend", "items api with fastapi", {"mutants": "0"})
    out = await run()
    complaint = srv.chat_requests[4]["messages"][-1]["content"]
    assert "schemathesis" in complaint and "Server error" in complaint and "POST /items" in complaint
    assert out.ok, (out.error, out.data)
    st = {c.name: c for c in checks_of(out)}["schemathesis"]
    assert st.outcome == "passed" and "cases generated" in st.detail


@needs
async def test_fuzz_off_by_option(tmp_path: Path, srv: ScriptedOpenAI) -> None:  # noqa: F811
    srv.push(
        write("app.py", APP), write("test_app.py", TESTS), write("service.json", MANIFEST), text("Items API written.")
    )
    run = Run(tmp_path, srv, "backend", "items api", {"mutants": "0", "fuzz": "0"})
    out = await run()
    assert out.ok, out.error
    assert "schemathesis" not in {c.name for c in checks_of(out)}
