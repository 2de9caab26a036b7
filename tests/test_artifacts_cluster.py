"""Artifacts in a cluster (issue 19, orchgpt/artifact_db.py): with the store on PostgreSQL a
file an agent uploads through one daemon is in the database, content-addressed and chunked,
so every daemon serves it. Two real daemons (``--cluster --store postgresql://...``) on one
real PostgreSQL server, a real agentd or raw agents (StubAgent), real TLS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Action, Command, EventKind, TaskEvent
from tests.support import artifact_rows
from tests.support.cli_oneshot import cli, env_for
from tests.support.mesh import AgentProc, Daemon, await_for, issue, start_agent
from tests.support.stub_agent import StubAgent

pytestmark = pytest.mark.timeout(90)
CHUNK = 256 * 1024


def pair(daemon_factory, postgres_url: str, tmp_path: Path, cap: int = 0) -> list[Daemon]:  # type: ignore[no-untyped-def]
    env = {"ORCHGPT_ARTIFACT_STORE_MAX_BYTES": str(cap)}
    return [
        daemon_factory(
            "--no-spawn", "--cluster", "--store", postgres_url, env=env, data_dir=tmp_path / f"data-{i}"
        ).start()
        for i in range(2)
    ]


async def listed_on(d: Daemon, agent_id: str) -> bool:
    async with d.client() as c:
        return agent_id in {a.agent_id for a in await asyncio.wait_for(c.list_agents(), 10)}


async def run(c: MeshClient, cmd: Command, timeout: float = 30) -> list[TaskEvent]:
    async def go() -> list[TaskEvent]:
        return [ev async for ev in c.submit(cmd)]

    return await asyncio.wait_for(go(), timeout)


def pieces(path: str, data: bytes, sha: str | None = None) -> Iterator[pb.FileChunk]:
    """The file's FILE_TRANSFER chunks as agentd sends them (256 KiB; sha256 on the first and last)."""
    digest = hashlib.sha256(data).hexdigest() if sha is None else sha
    offset = 0
    while True:
        piece = data[offset : offset + CHUNK]
        last = offset + len(piece) >= len(data)
        yield pb.FileChunk(
            path=path,
            offset=offset,
            data=piece,
            eof=last,
            size=len(data),
            sha256=digest if last or offset == 0 else "",
        )
        offset += len(piece)
        if last:
            return


def upload(m: StubAgent, task_id: str, path: str, data: bytes, sha: str | None = None) -> pb.Envelope:
    """Send the file; the envelope of its last chunk (an ERROR about the file answers that one)."""
    last = None
    for c in pieces(path, data, sha):
        last = m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=c)
    assert last is not None
    return last


def reply(m: StubAgent, task_id: str) -> None:
    m.send(pb.REPLY, task_id=task_id, reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED)))


async def fetched(d: Daemon, task_id: str, path: str, dest: Path) -> bytes:
    async with d.client() as c:
        return (await c.fetch_artifact(task_id, path, dest)).read_bytes()


async def test_a_file_uploaded_through_one_daemon_is_fetched_from_the_other(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    """An echo agent connected only to A writes a file of three chunks for a task submitted
    on B; its result comes back to B only once the file is in the database, so B serves it at
    once: the same bytes and sha256, sent a chunk at a time; `fetch_all` on B lists it."""
    a, b = pair(daemon_factory, postgres_url, tmp_path)
    agents.append(
        start_agent(a, "echo-a", cwd=tmp_path / "host-a", extra_args=["--workspace-root", str(tmp_path / "ws-a")])
    )
    await await_for(lambda: listed_on(b, "echo-a"), timeout=20, what="echo-a listed on B")
    size = 2 * CHUNK + 1234
    async with b.client() as c:
        events = await run(
            c, Command("echo", Action.RUN, "x", options={"file": "out/big.bin", "file_bytes": str(size)})
        )
        res = events[-1]
        assert res.kind == EventKind.RESULT and res.result is not None and res.result.ok, events[-1]
        task_id = res.task_id
        want = random.Random(task_id).randbytes(size)  # what agentd's echo wrote
        sha = hashlib.sha256(want).hexdigest()
        assert [(x.path, x.sha256) for x in res.result.artifacts] == [("out/big.bin", sha)]
        # straight after the result, on the daemon the agent is not connected to
        call = c._stub.FetchArtifact(pb.FetchArtifactRequest(task_id=task_id, path="out/big.bin"), timeout=30)
        got = [x async for x in call]
    assert b"".join(x.data for x in got) == want
    assert len(got) >= 3 and got[-1].eof and got[-1].sha256 == sha and got[-1].size == size
    assert [x.offset for x in got] == [sum(len(y.data) for y in got[:i]) for i in range(len(got))]
    assert "task_claimed" in a.log()  # it ran on A's agent, and was uploaded through A
    assert artifact_rows.files_of(b, task_id) == {"out/big.bin": {"sha256": sha, "size": size}}
    assert artifact_rows.blob_bytes(b, sha) == want  # three rows of artifact_chunks
    assert not list((b.data_dir / "artifacts").glob("sha256/*/*"))  # nothing on either host's disk
    assert not list((a.data_dir / "artifacts").glob("sha256/*/*"))
    assert await fetched(a, task_id, "out/big.bin", tmp_path / "from-a") == want
    async with b.client() as c:  # the task's file list (its result) on B, and every file of it
        saved = await c.fetch_all(task_id, tmp_path / "all")
    assert [p.read_bytes() for p in saved] == [want]


async def test_the_same_bytes_from_two_daemons_are_one_blob(daemon_factory, postgres_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two tasks, their agents on different daemons, upload the same bytes at the same moment:
    both uploads succeed, one blob is stored, and each task's file is served by both daemons."""
    a, b = pair(daemon_factory, postgres_url, tmp_path)
    data = os.urandom(CHUNK + 77)
    sha = hashlib.sha256(data).hexdigest()
    async with (
        StubAgent(a.address, issue(a.certs, "up-a", "agent"), "up-a", "upa") as ma,
        StubAgent(b.address, issue(b.certs, "up-b", "agent"), "up-b", "upb") as mb,
        a.client() as c,
    ):
        await await_for(lambda: listed_on(a, "up-b"), timeout=20, what="up-b listed on A")
        fa = asyncio.ensure_future(run(c, Command("upa", Action.RUN, "x")))
        fb = asyncio.ensure_future(run(c, Command("upb", Action.RUN, "x")))  # submitted on A, runs on B's agent
        ta, tb = (await ma.expect(pb.RUN, timeout=20)).task.task_id, (await mb.expect(pb.RUN, timeout=20)).task.task_id
        ea, eb = upload(ma, ta, "same.bin", data), upload(mb, tb, "copy/same.bin", data)
        reply(ma, ta)
        reply(mb, tb)
        for f in (fa, fb):
            assert (await f)[-1].kind == EventKind.RESULT
        assert not [e for e in ma.seen(pb.ERROR) + mb.seen(pb.ERROR) if e.correlation_id in (ea.id, eb.id)]
    assert artifact_rows.blobs(a) == [sha]
    assert artifact_rows.files_of(a, ta) == {"same.bin": {"sha256": sha, "size": len(data)}}
    assert artifact_rows.files_of(a, tb) == {"copy/same.bin": {"sha256": sha, "size": len(data)}}
    for d in (a, b):
        assert await fetched(d, ta, "same.bin", tmp_path / "x") == data
        assert await fetched(d, tb, "copy/same.bin", tmp_path / "y") == data


async def test_a_sha256_mismatch_is_refused_and_nothing_is_stored(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    a, b = pair(daemon_factory, postgres_url, tmp_path)
    data = os.urandom(CHUNK + 5)
    async with StubAgent(a.address, issue(a.certs, "liar", "agent"), "liar", "liartype") as m, b.client() as c:
        await await_for(lambda: listed_on(b, "liar"), timeout=20, what="liar listed on B")
        fut = asyncio.ensure_future(run(c, Command("liartype", Action.RUN, "x")))
        task_id = (await m.expect(pb.RUN, timeout=20)).task.task_id
        last = upload(m, task_id, "bad.bin", data, sha="0" * 64)
        err = await m.error_for(last)
        assert err.error.code == "DATA_LOSS" and "sha256 mismatch" in err.error.message, err
        reply(m, task_id)
        await fut
        with pytest.raises(ClientError) as e:
            await c.fetch_artifact(task_id, "bad.bin", tmp_path / "bad.bin")
        assert e.value.code == "NOT_FOUND", e.value
    assert artifact_rows.blobs(a) == [] and artifact_rows.files_of(a, task_id) == {}
    assert not list((a.data_dir / "artifacts" / "tmp").iterdir())


async def test_the_cap_counts_the_blobs_every_daemon_stored(daemon_factory, postgres_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """artifact_store_max_bytes caps the blobs in the database: B, which has stored nothing
    itself, refuses a file that would take the database past the cap after A stored one."""
    cap = 3 * CHUNK
    a, b = pair(daemon_factory, postgres_url, tmp_path, cap=cap)
    first, second, small = os.urandom(2 * CHUNK), os.urandom(CHUNK + 1), os.urandom(1000)
    async with (
        StubAgent(a.address, issue(a.certs, "cap-a", "agent"), "cap-a", "capa") as ma,
        StubAgent(b.address, issue(b.certs, "cap-b", "agent"), "cap-b", "capb") as mb,
        a.client() as c,
    ):
        await await_for(lambda: listed_on(a, "cap-b"), timeout=20, what="cap-b listed on A")
        fa = asyncio.ensure_future(run(c, Command("capa", Action.RUN, "x")))
        ta = (await ma.expect(pb.RUN, timeout=20)).task.task_id
        upload(ma, ta, "first.bin", first)
        reply(ma, ta)
        await fa
        fb = asyncio.ensure_future(run(c, Command("capb", Action.RUN, "x")))
        tb = (await mb.expect(pb.RUN, timeout=20)).task.task_id
        last = upload(mb, tb, "second.bin", second)
        err = await mb.error_for(last)
        assert err.error.code == "RESOURCE_EXHAUSTED", err
        assert "artifact_store_max_bytes" in err.error.message and "artifact store full" in err.error.message
        upload(mb, tb, "small.bin", small)  # what fits still goes in
        reply(mb, tb)
        await fb
        assert await fetched(a, tb, "small.bin", tmp_path / "small") == small
        with pytest.raises(ClientError):
            await c.fetch_artifact(tb, "second.bin", tmp_path / "second")
    assert sorted(artifact_rows.blobs(a)) == sorted(hashlib.sha256(x).hexdigest() for x in (first, small))
    assert "artifact_store_full" in b.log()
    assert not list((b.data_dir / "artifacts" / "tmp").iterdir())


async def test_a_damaged_blob_is_not_served_as_good(daemon_factory, postgres_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A chunk changed or lost in the database: the fetch fails with DATA_LOSS before the
    last piece, instead of handing out other bytes under the file's name."""
    a, b = pair(daemon_factory, postgres_url, tmp_path)
    data = os.urandom(2 * CHUNK + 9)
    sha = hashlib.sha256(data).hexdigest()
    async with StubAgent(a.address, issue(a.certs, "dmg", "agent"), "dmg", "dmgtype") as m, a.client() as c:
        fut = asyncio.ensure_future(run(c, Command("dmgtype", Action.RUN, "x")))
        task_id = (await m.expect(pb.RUN, timeout=20)).task.task_id
        upload(m, task_id, "f.bin", data)
        reply(m, task_id)
        await fut
    assert await fetched(b, task_id, "f.bin", tmp_path / "good") == data
    import psycopg

    for sql, params in (
        ("UPDATE artifact_chunks SET data = %s WHERE sha256 = %s AND n = 1", (b"x" * CHUNK, sha)),  # changed
        ("DELETE FROM artifact_chunks WHERE sha256 = %s AND n = 2", (sha,)),  # and lost
    ):
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql, params)
        with pytest.raises(ClientError) as e:
            await fetched(b, task_id, "f.bin", tmp_path / "bad")
        assert e.value.code == "DATA_LOSS" and "damaged" in str(e.value), e.value
        assert not (tmp_path / "bad").exists()


def autogpt(d: Daemon, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(d, "--orchestrator", d.address, *args, env=env_for(d, NO_COLOR="1"), cwd=cwd)


async def test_a_local_agents_file_is_fetched_from_the_other_daemon_with_the_cli(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A task runs on an agent A spawns on its own host; the file that agent wrote in A's
    workspace is uploaded like any agent's result files, so `/fetch` on B (which spawns nothing
    and has no workspace of it) saves it."""
    env = {"ORCHGPT_ARTIFACT_STORE_MAX_BYTES": "0"}
    a = daemon_factory("--cluster", "--store", postgres_url, env=env, data_dir=tmp_path / "data-a").start()
    b = daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, env=env, data_dir=tmp_path / "data-b")
    b.start()
    r = await asyncio.to_thread(autogpt, a, tmp_path, "-c", '/echo run "made on A" -o file=notes/out.txt --id loc-1')
    assert r.returncode == 0 and "made on A" in r.stdout, r.stdout + r.stderr + a.log()[-2000:] + b.log()[-2000:]
    async with b.client() as c:
        task, _, _ = await c.get_task("loc-1", with_events=False)
    assert task.agent_id.startswith("local-"), task.agent_id  # spawned by A, on A's host
    assert (a.data_dir / "workspaces" / "loc-1" / "notes" / "out.txt").read_bytes() == b"made on A"
    got = await asyncio.to_thread(autogpt, b, tmp_path, "-c", "/fetch loc-1 notes/out.txt fetched.txt")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "fetched.txt").read_bytes() == b"made on A"


async def test_the_result_waits_for_its_files_commit_and_the_daemon_goes_on_serving(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The blob's transaction waits (another session holds the cap's advisory lock): the
    agent's REPLY, sent after its file, is not handled until the file is committed, while
    daemon A answers other calls meanwhile (the write is not on its event loop); then B
    serves the file as soon as the client has the result."""
    import psycopg

    from orchgpt.artifact_db import _CAP_LOCK

    a, b = pair(daemon_factory, postgres_url, tmp_path, cap=64 * CHUNK)
    data = os.urandom(CHUNK + 3)
    async with StubAgent(a.address, issue(a.certs, "slow", "agent"), "slow", "slowtype") as m, b.client() as c:
        await await_for(lambda: listed_on(b, "slow"), timeout=20, what="slow listed on B")
        fut = asyncio.ensure_future(run(c, Command("slowtype", Action.RUN, "x")))
        task_id = (await m.expect(pb.RUN, timeout=20)).task.task_id
        with psycopg.connect(postgres_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (_CAP_LOCK,))
            upload(m, task_id, "late.bin", data)
            reply(m, task_id)
            done, _ = await asyncio.wait({fut}, timeout=1.5)
            assert not done, "the result was handled before its file was committed"
            async with a.client() as ca:  # A's loop is free while the commit waits
                assert "slow" in {x.agent_id for x in await asyncio.wait_for(ca.list_agents(), 5)}
            holder.execute("SELECT pg_advisory_unlock(%s)", (_CAP_LOCK,))
        assert (await fut)[-1].kind == EventKind.RESULT
        assert (await c.fetch_artifact(task_id, "late.bin", tmp_path / "late.bin")).read_bytes() == data


async def test_a_file_stored_on_disk_before_the_upgrade_is_still_served(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A daemon on PostgreSQL that kept its uploads on its disk (before artifacts moved into
    the database) still serves them from there; the other daemon does not have them."""
    import json

    a, b = pair(daemon_factory, postgres_url, tmp_path)
    async with StubAgent(a.address, issue(a.certs, "old", "agent"), "old", "oldtype") as m, a.client() as c:
        fut = asyncio.ensure_future(run(c, Command("oldtype", Action.RUN, "x")))
        task_id = (await m.expect(pb.RUN, timeout=20)).task.task_id
        reply(m, task_id)
        await fut
    data = b"kept on disk"
    sha = hashlib.sha256(data).hexdigest()
    blob = artifact_rows.blob_path(a, sha)
    blob.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    blob.write_bytes(data)
    index = {"old.txt": {"sha256": sha, "size": len(data)}}
    (a.data_dir / "artifacts" / "tasks" / f"{task_id}.json").write_text(json.dumps(index))
    assert await fetched(a, task_id, "old.txt", tmp_path / "old") == data
    with pytest.raises(ClientError) as e:
        await fetched(b, task_id, "old.txt", tmp_path / "old-b")
    assert e.value.code == "NOT_FOUND"


async def test_the_artifact_connections_are_replaced_after_the_server_drops_them(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Every `orchgpt-artifacts` connection terminated (a restart, a failover): the next
    fetch and the next upload go through on new ones."""
    import psycopg

    a, b = pair(daemon_factory, postgres_url, tmp_path)
    first, second = os.urandom(1000), os.urandom(2000)
    async with StubAgent(a.address, issue(a.certs, "dropper", "agent"), "dropper", "droptype") as m, a.client() as c:
        for i, data in enumerate((first, second)):
            fut = asyncio.ensure_future(run(c, Command("droptype", Action.RUN, "x")))
            task_id = (await m.expect(pb.RUN, timeout=20)).task.task_id
            last = upload(m, task_id, "f.bin", data)
            reply(m, task_id)
            await fut
            assert not [e for e in m.seen(pb.ERROR) if e.correlation_id == last.id]
            assert await fetched(b, task_id, "f.bin", tmp_path / f"f{i}") == data
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                gone = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'orchgpt-artifacts'"
                ).fetchone()
            assert gone is not None and gone[0] >= 2  # A's (the upload) and B's (the fetch)
