"""The store tests' fixtures: a SQLite path, the backends the shared contract runs on, an open
store, a task with every field set."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchgpt.models import (
    Action,
    Artifact,
    Task,
    TaskResult,
    TaskState,
    Usage,
)
from orchgpt.store import open_store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "orchgpt.db"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db: Path) -> str:
    """The store URL of each backend the shared contract runs on (issue 19): a SQLite file,
    a fresh database on a real PostgreSQL server (tests/support/postgres.py)."""
    return str(db) if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def store(backend: str):
    s = open_store(backend)
    yield s
    s.close()


def full_task(task_id: str = "t-full", **kw) -> Task:
    """A task with every field set to something other than its default."""
    result = TaskResult(
        task_id=task_id,
        state=TaskState.SUCCEEDED,
        output="done ✓",
        error="",
        artifacts=[Artifact("src/app.py", 120, "ab" * 32, "code"), Artifact("README.md", 9, "cd" * 32, "document")],
        usage=Usage(prompt_tokens=100, completion_tokens=50, cost_usd=0.0125, model="gpt-x", calls=3),
        workspace="/ws/t-full",
        agent_type="coder",
        agent_id="coder-1",
        data={"tests": "3 passed"},
    )
    dep = TaskResult(
        task_id="dep-1",
        state=TaskState.FAILED,
        error="no",
        agent_type="architect",
        usage=Usage(1, 2, 0.5, "m", 1),
        artifacts=[Artifact("plan.md", 1, "ef", "document")],
    )
    fields = dict(
        task_id=task_id,
        agent_type="coder",
        action=Action.CREATE,
        input='make "an app"\nnow',
        language="rust",
        session_id="sess-1",
        parent_task_id="",
        approval=True,
        options={"delay": "0.5", "model": "x"},
        state=TaskState.SUCCEEDED,
        agent_id="coder-1",
        attempts=2,
        created_ms=1_000,
        updated_ms=2_000,
        result=result,
        error="first try failed",
        submitted_by="alice",
        delegated_by="manager-7",
        inputs=[dep],
        reply_to="corr-9",
    )
    fields.update(kw)
    return Task(**fields)  # type: ignore[arg-type]
