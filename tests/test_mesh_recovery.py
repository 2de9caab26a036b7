"""Mesh.recover: what a restarted orchgpt does with the tasks the last one left unfinished."""

from __future__ import annotations

from pathlib import Path

from orchgpt.mesh import Mesh
from orchgpt.models import Task, TaskResult, TaskState
from orchgpt.spawner import read_journals
from orchgpt.store.sqlite import SqliteStore


def _left_behind(path: Path) -> None:
    """The store as a SIGKILLed orchgpt leaves it: tasks assigned to local agents, one queued."""
    store = SqliteStore(str(path))
    for tid, state, agent in [
        ("t-done-in-agent", TaskState.RUNNING, "local-echo-aaa111"),
        ("t-lost", TaskState.RUNNING, "local-echo-bbb222"),
        ("t-queued", TaskState.QUEUED, ""),
    ]:
        store.create_task(Task(task_id=tid, agent_type="echo", input=tid, state=state, agent_id=agent, attempts=1))
    store.close()


def test_a_journaled_result_finishes_its_task_and_the_rest_are_requeued(tmp_path: Path) -> None:
    db = tmp_path / "orchgpt.db"
    _left_behind(db)
    # the agent of t-done-in-agent wrote its result down before orchgpt died (as agentd does)
    from agentd.link import Link

    link = Link.__new__(Link)
    link.journal = tmp_path / "local-echo-aaa111.results"
    link._journal(TaskResult("t-done-in-agent", TaskState.SUCCEEDED, output="finished before the crash"))
    journals = read_journals(tmp_path)
    assert list(journals) == ["local-echo-aaa111"]

    store = SqliteStore(str(db))
    mesh = Mesh(store, builtin_types=("echo",), max_attempts=3)
    assert mesh.recover(journals) == 3
    mesh.flush()
    done = store.get_task("t-done-in-agent")
    assert done is not None and done.state == TaskState.SUCCEEDED
    assert done.result and done.result.output == "finished before the crash"
    assert done.result.data["recovered_from"] == "agent journal"
    for tid in ("t-lost", "t-queued"):
        t = store.get_task(tid)
        assert t is not None and t.state == TaskState.QUEUED, tid
    lost_events = store.events("t-lost")
    assert any("local agent local-echo-bbb222 is gone" in e.text for e in lost_events)
    store.close()


def test_a_torn_journal_line_is_skipped(tmp_path: Path) -> None:
    import base64

    (tmp_path / "local-echo-ccc333.results").write_bytes(
        b"not base64 protobuf!\n" + base64.b64encode(b"\xff\xff\xff garbage") + b"\n"
    )
    assert read_journals(tmp_path) == {}
