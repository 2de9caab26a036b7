"""Session transcripts in every store (SQLite, memory, PostgreSQL): messages recorded once per
id, read in order, deleted one by one, cleared, and a session deleted with its tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchgpt import transcripts
from orchgpt.models import SessionMessage, Task, TaskEvent, TaskResult, TaskState
from orchgpt.store import open_store
from orchgpt.store.base import Store
from orchgpt.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        s: Store = open_store(str(tmp_path / "o.db"))
    elif request.param == "memory":
        s = MemoryStore()
    else:
        s = open_store(request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def finished(task_id: str, session: str, **data: str) -> Task:
    t = Task(
        task_id,
        "workflow",
        input="the task",
        session_id=session,
        submitted_by="client:alice",
        created_ms=1000,
        updated_ms=2000,
    )
    t.result = TaskResult(task_id, TaskState.SUCCEEDED, output="the summary", data=dict(data))
    t.state = TaskState.SUCCEEDED
    return t


def test_messages_of_a_workflow_are_kept_once_and_can_be_removed(store: Store) -> None:
    turns = [
        {"speaker": "coder", "content": "c1", "ts_ms": 1500},
        {"speaker": "reviewer", "content": "ok"},
    ]
    t = finished("w1", "s1", transcript=json.dumps(turns), summary="the summary", summary_method="llm")
    store.create_task(t)
    store.append_events([TaskEvent("w1", "status", seq=1)])  # type: ignore[arg-type]
    transcripts.record(store, t)
    transcripts.record(store, t)  # finished twice (a late result): nothing twice
    got = store.session_messages("s1")
    assert [(m.message_id, m.speaker, m.role, m.content) for m in got] == [
        ("w1:0", "client:alice", "user", "the task"),
        ("w1:1", "coder", "assistant", "c1"),
        ("w1:2", "reviewer", "assistant", "ok"),
        ("w1:3", "summary", "summary", "the summary"),
    ]
    assert store.get_session_message("w1:2") == got[2]
    assert store.delete_session_message("w1:2") == 1 and store.delete_session_message("w1:2") == 0
    assert [m.message_id for m in store.session_messages("s1")] == ["w1:0", "w1:1", "w1:3"]
    other = finished("e1", "s2")
    store.create_task(other)
    transcripts.record(store, other)
    assert store.clear_session("s1") == 3 and store.session_messages("s1") == []
    assert store.get_task("w1") is not None  # clearing keeps the tasks
    store.add_session_messages([SessionMessage("x:0", "s1", "w1", "me", "user", "again", 3000)])
    assert store.delete_session("s1") == 2  # one message, one task
    assert store.get_task("w1") is None and store.session_messages("s1") == []
    assert store.events("w1") == [] and store.get_session("s1") is None
    assert [m.content for m in store.session_messages("s2")] == [
        "the task",
        "the summary",
    ]  # untouched


def test_a_sub_task_adds_no_message(store: Store) -> None:
    t = finished("c1", "s1")
    t.parent_task_id = "w1"
    transcripts.record(store, t)
    assert store.session_messages("s1") == []
