"""The results journal (orchgpt/journal.py) and how agentd keeps it (issue 11, finding 2)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from orchgpt import journal
from orchgpt.models import TaskResult, TaskState

pytestmark = pytest.mark.timeout(30)


def ok(task_id: str, out: str = "x") -> TaskResult:
    return TaskResult(task_id, TaskState.SUCCEEDED, output=out)


def test_append_read_rewrite(tmp_path: Path) -> None:
    p = journal.path_for(tmp_path / "state", "agent-1")
    assert journal.read(p) == []
    journal.append(p, ok("t1", "first"))
    journal.append(p, ok("t2"))
    journal.append(p, ok("t1", "again"))  # the last one per task counts
    assert p.stat().st_mode & 0o777 == 0o600
    got = {r.task_id: r.output for r in journal.read(p)}
    assert got == {"t1": "again", "t2": "x"}
    journal.rewrite(p, [ok("t2")])
    assert [r.task_id for r in journal.read(p)] == ["t2"]
    assert p.stat().st_mode & 0o777 == 0o600
    journal.rewrite(p, [])
    assert not p.exists()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    p = tmp_path / "a.results"
    journal.append(p, ok("t1"))
    whole = p.read_bytes()
    p.write_bytes(whole + whole[: len(whole) // 2])  # a crash in the middle of an append
    assert [r.task_id for r in journal.read(p)] == ["t1"]
    p.write_bytes(b"not base64!\n" + base64.b64encode(b"\xff\xff garbage") + b"\n")
    assert journal.read(p) == []


def test_default_path_is_next_to_the_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "certs" / "builder-1.pem"
    cert.parent.mkdir()
    assert journal.default_path("builder-1", cert) == tmp_path / "certs" / "builder-1.results"


def _link(tmp_path: Path, journal_path: Path):  # type: ignore[no-untyped-def]
    from agentd.agents.echo import EchoAgent
    from agentd.link import Link
    from orchgpt.certs import CertPaths

    return Link(
        EchoAgent(), "a", "127.0.0.1:1", CertPaths(tmp_path, tmp_path, tmp_path), tmp_path, journal=journal_path
    )


async def test_agentd_keeps_results_until_orchgpt_confirms_them(tmp_path: Path) -> None:
    """A restarted agentd reports its journal; REGISTERED confirms what the REGISTER carried
    (not what finished after it: that goes as a REPLY); a PONG confirms a REPLY."""
    from orchgpt import codec
    from orchgpt.batching import Outbox
    from orchgpt.iac.v1 import iac_pb2 as pb

    p = tmp_path / "a.results"
    journal.append(p, ok("t-before-restart"))
    link = _link(tmp_path, p)
    assert [r.task_id for r in link._report()] == ["t-before-restart"]  # what the REGISTER carries
    # finished after the REGISTER left, before REGISTERED came: kept, journaled
    late = ok("t-late")
    link._journal(late)
    link.pending_results.append(late)
    out = Outbox()
    registered = codec.new_envelope(
        pb.REGISTERED,
        "orchgpt",
        registered=pb.Registered(agent_id="a", heartbeat_interval_ms=500, reconnect_grace_ms=15000),
    )
    link._on_envelope(registered, out)
    assert link.reconnect_grace_s == 15.0
    assert [r.task_id for r in journal.read(p)] == ["t-late"]
    batch = await asyncio.wait_for(out.next_batch(), 5)
    assert batch is not None
    reply, ping = batch.envelopes
    assert (reply.type, reply.task_id, ping.type) == (pb.REPLY, "t-late", pb.PING)
    assert set(link.unconfirmed) == {"t-late"} and link.pending_results == []
    # the PONG to the PING after the REPLY confirms it (orchgpt handles a stream in order)
    link._on_envelope(codec.new_envelope(pb.PONG, "orchgpt", correlation_id="nope"), out)
    assert set(link.unconfirmed) == {"t-late"}
    link._on_envelope(codec.new_envelope(pb.PONG, "orchgpt", correlation_id=ping.id), out)
    assert link.unconfirmed == {} and not p.exists()
