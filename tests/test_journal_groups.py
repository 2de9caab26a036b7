"""agentd's results journal per group of results, not per result (issue 17, session 4): the results
that finish together share one fsync and one PING; a confirmation is a tombstone line, not a
rewrite; a REPLY still leaves only once its result is on disk."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import TaskResult, TaskState
from orchgpt.wire import codec, journal
from orchgpt.wire.batching import Outbox

pytestmark = pytest.mark.timeout(30)


def ok(task_id: str, out: str = "x") -> TaskResult:
    return TaskResult(task_id, TaskState.SUCCEEDED, output=out)


def _link(tmp_path: Path, journal_path: Path, slots: int = 8):  # type: ignore[no-untyped-def]
    from agentd.agents.echo import EchoAgent
    from agentd.link import Link
    from orchgpt.certs import CertPaths

    link = Link(
        EchoAgent(),
        "a",
        "127.0.0.1:1",
        CertPaths(tmp_path, tmp_path, tmp_path),
        tmp_path / "ws",
        journal=journal_path,
        concurrency=slots,
    )
    link.granted(slots)
    return link


def _run(task_id: str) -> pb.Envelope:
    spec = pb.TaskSpec(task_id=task_id, agent_type="echo", action=pb.RUN_ACTION, input=f"in {task_id}")
    return codec.new_envelope(pb.RUN, "orchgpt", task_id=task_id, task=spec)


def _queued(out: Outbox) -> list[pb.Envelope]:
    return list(out._items)


async def test_results_finished_together_share_one_fsync_and_one_ping(tmp_path: Path) -> None:
    p = tmp_path / "a.results"
    link = _link(tmp_path, p)
    out = Outbox()
    link.outbox = out
    ids = [f"t{i}" for i in range(8)]
    for t in ids:  # one frame of RUNs
        link._start_task(_run(t))
    await asyncio.wait_for(asyncio.gather(*link.running.values()), 10)
    await asyncio.sleep(0)  # the PING after the REPLYs goes at the end of their loop turn
    sent = [e for e in _queued(out) if e.type in (pb.REPLY, pb.PING)]
    replies = [e for e in sent if e.type == pb.REPLY]
    pings = [e for e in sent if e.type == pb.PING]
    assert sorted(e.task_id for e in replies) == ids
    assert len(pings) == 1 and sent[-1] is pings[0]  # one PING, after every REPLY
    assert link.journal_writer is not None and link.journal_writer.fsyncs == 1  # one fsync for the 8
    # every result whose REPLY is queued is in the file already (what a SIGKILL leaves)
    assert sorted(r.task_id for r in journal.read(p)) == ids
    # the PONG to that PING confirms the 8: the journal goes
    link._on_envelope(codec.new_envelope(pb.PONG, "orchgpt", correlation_id=pings[0].id), out)
    assert link.unconfirmed == {} and not p.exists()


async def test_a_reply_waits_for_the_fsync_of_its_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the journal's fsync has not returned, no REPLY is queued."""
    p = tmp_path / "a.results"
    link = _link(tmp_path, p, slots=1)
    out = Outbox()
    link.outbox = out
    gate = asyncio.Event()
    real = os.fsync
    loop = asyncio.get_running_loop()

    def slow_fsync(fd: int) -> None:  # in the worker thread: wait for the test to let it go
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(10)
        real(fd)

    jw = link.journal_writer
    assert jw is not None
    monkeypatch.setattr(os, "fsync", slow_fsync)
    link._start_task(_run("t1"))
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert [e.type for e in _queued(out) if e.type == pb.REPLY] == []
    assert [r.task_id for r in journal.read(p)] == ["t1"]  # written, being fsynced
    gate.set()
    await asyncio.wait_for(asyncio.gather(*link.running.values()), 10)
    assert [e.task_id for e in _queued(out) if e.type == pb.REPLY] == ["t1"]


def test_tombstones_strike_results_out(tmp_path: Path) -> None:
    from orchgpt.wire.journal_writer import JournalWriter

    p = tmp_path / "a.results"
    jw = JournalWriter(p)
    for t in ("t1", "t2", "t3"):
        jw.append(t, codec.result_to_bytes(ok(t)))
    jw.strike(["t2"])
    assert sorted(r.task_id for r in journal.read(p)) == ["t1", "t3"]
    assert p.read_bytes().count(b"\n") == 4  # a line, not a rewrite
    jw.append("t2", codec.result_to_bytes(ok("t2", "again")))  # a later result of the same task counts
    assert {r.task_id: r.output for r in journal.read(p)}["t2"] == "again"
    jw.strike(["t1", "t2", "t3"])
    assert not p.exists()
    jw.close()


def test_a_mostly_dead_journal_is_rewritten_with_its_live_results(tmp_path: Path) -> None:
    from orchgpt.wire import journal_writer
    from orchgpt.wire.journal_writer import JournalWriter

    p = tmp_path / "a.results"
    jw = JournalWriter(p)
    jw.append("keep", codec.result_to_bytes(ok("keep")))
    for i in range(journal_writer.COMPACT_LINES):
        jw.append(f"t{i}", codec.result_to_bytes(ok(f"t{i}")))
        jw.strike([f"t{i}"])
    assert [r.task_id for r in journal.read(p)] == ["keep"]
    assert p.read_bytes().count(b"\n") < journal_writer.COMPACT_LINES  # rewritten on the way
    jw.close()


def test_a_restarted_agent_starts_from_a_clean_journal(tmp_path: Path) -> None:
    """What a crash left (struck results, a torn last line) is rewritten before new lines are
    appended: a result appended after a torn line is not glued to it."""
    p = tmp_path / "a.results"
    journal.append(p, ok("t1"))
    journal.append(p, ok("t2"))
    with open(p, "ab") as f:
        f.write(b"-t2\n" + journal.line_of(codec.result_to_bytes(ok("t3")))[:10])  # torn
    link = _link(tmp_path, p)
    assert [r.task_id for r in link.pending_results] == ["t1"]
    link._journal(ok("t4"))
    assert sorted(r.task_id for r in journal.read(p)) == ["t1", "t4"]


async def test_a_task_that_never_uses_its_workspace_gets_no_directory(tmp_path: Path) -> None:
    """Per-task setup an echo does not need (issue 17, session 4): the workspace directory is made
    when the task first uses it; a bad option ``workspace`` still fails the task."""
    from agentd.workspace import task_workspace

    link = _link(tmp_path, tmp_path / "a.results")
    link.workspace_for = lambda req: task_workspace(tmp_path / "ws", req)
    out = Outbox()
    link.outbox = out
    plain = _run("plain")
    with_file = _run("with-file")
    with_file.task.options["file"] = "out.txt"
    bad = _run("bad-ws")
    bad.task.options["workspace"] = "../escape"
    for env in (plain, with_file, bad):
        link._start_task(env)
    await asyncio.wait_for(asyncio.gather(*link.running.values(), return_exceptions=True), 10)
    results = {e.task_id: e.reply.result for e in _queued(out) if e.type == pb.REPLY}
    assert results["plain"].state == pb.SUCCEEDED and results["plain"].workspace == ""
    assert not (tmp_path / "ws" / "plain").exists()
    assert results["with-file"].workspace == str(tmp_path / "ws" / "with-file")
    assert (tmp_path / "ws" / "with-file" / "out.txt").read_text() == "in with-file"
    assert results["bad-ws"].state == pb.FAILED and "invalid workspace name" in results["bad-ws"].error
