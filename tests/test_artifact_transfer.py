"""Issue 21, files over the mesh: an agent uploads its task's artifacts to the daemon
(FILE_TRANSFER, sha256-checked) into a content-addressed store; FetchArtifact serves them
whichever host ran the task. Real daemon, real agentd with its own workspace root, real TLS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt.certs import paths_for
from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Action, Command, EventKind, TaskEvent
from tests.support import artifact_rows
from tests.support.mesh import AgentProc, Daemon, await_for, issue, make_certs, start_agent
from tests.support.stub_agent import StubAgent

pytestmark = pytest.mark.timeout(60)
CAP = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, AgentProc, Path]]:
    """A daemon (no spawning, artifact store capped at CAP) and a remote echo agent whose
    workspace root is its own directory, not the daemon's."""
    tmp = tmp_path_factory.mktemp("files")
    certs = make_certs(tmp / "certs")
    issue(certs, "alice", "client")
    d = Daemon(
        workdir=tmp,
        certs=certs,
        data_dir=tmp / "data",
        args=["--no-spawn"],
        env={"ORCHGPT_ARTIFACT_STORE_MAX_BYTES": str(CAP)},
    ).start()
    remote_ws = tmp / "remote-host" / "workspaces"
    agent = start_agent(d, "far", "echo", cwd=tmp / "remote-host", extra_args=["--workspace-root", str(remote_ws)])
    try:
        yield d, agent, remote_ws
    finally:
        agent.stop()
        d.kill()


def client(d: Daemon, name: str = "alice") -> MeshClient:
    return MeshClient(d.address, paths_for(d.certs, name), timeout=10)


async def run(c: MeshClient, cmd: Command, timeout: float = 15) -> list[TaskEvent]:
    async def go() -> list[TaskEvent]:
        return [ev async for ev in c.submit(cmd)]

    return await asyncio.wait_for(go(), timeout)


async def echo_file(d: Daemon, text: str, name: str = "out.txt") -> str:
    async with client(d) as c:
        await await_for(lambda: c.list_agents("echo"), timeout=20, what="the echo agent to register")
        events = await run(c, Command("echo", Action.RUN, text, options={"file": name}))
    res = events[-1]
    assert res.kind == EventKind.RESULT and res.result is not None and res.result.ok, events[-1]
    assert [a.path for a in res.result.artifacts] == [name]
    return res.task_id


def blobs(d: Daemon) -> list[str]:
    return artifact_rows.blobs(d)  # on disk, or in the database on PostgreSQL


async def test_fetch_returns_a_remote_agents_file(mesh: tuple[Daemon, AgentProc, Path], tmp_path: Path) -> None:
    d, _, remote_ws = mesh
    task_id = await echo_file(d, "hello")
    written = remote_ws / task_id / "out.txt"
    assert written.read_bytes() == b"hello"  # on the agent's host
    assert not (d.data_dir / "workspaces" / task_id / "out.txt").exists()  # not on the daemon's
    async with client(d) as c:
        got = await c.fetch_artifact(task_id, "out.txt", tmp_path / "got.txt")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(b"hello").hexdigest()
    sha = hashlib.sha256(b"hello").hexdigest()
    assert artifact_rows.blob_bytes(d, sha) == b"hello"
    assert artifact_rows.files_of(d, task_id) == {"out.txt": {"sha256": sha, "size": 5}}
    if not artifact_rows.in_database(d):  # on PostgreSQL: in the database, not on this host's disk
        blob = artifact_rows.blob_path(d, sha)
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600
        assert stat.S_IMODE(blob.parent.stat().st_mode) == 0o700
    else:
        assert not artifact_rows.blob_path(d, sha).exists()


async def test_a_file_of_several_chunks(mesh: tuple[Daemon, AgentProc, Path], tmp_path: Path) -> None:
    d, _, _ = mesh
    text = "".join(f"line {i}\n" for i in range(80_000))  # ~700 KB: three 256 KiB chunks
    task_id = await echo_file(d, text, "big/log.txt")
    async with client(d) as c:
        got = await c.fetch_artifact(task_id, "big/log.txt", tmp_path / "log.txt")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(text.encode()).hexdigest()


async def test_same_content_is_stored_once(mesh: tuple[Daemon, AgentProc, Path], tmp_path: Path) -> None:
    d, _, _ = mesh
    first = await echo_file(d, "same bytes", "a.txt")
    before = blobs(d)
    assert hashlib.sha256(b"same bytes").hexdigest() in before
    second = await echo_file(d, "same bytes", "sub/b.txt")
    assert blobs(d) == before  # deduplicated by hash
    async with client(d) as c:
        for task_id, path in ((first, "a.txt"), (second, "sub/b.txt")):
            got = await c.fetch_artifact(task_id, path, tmp_path / "x")
            assert got.read_bytes() == b"same bytes"


async def test_echo_refuses_a_bad_file_path(mesh: tuple[Daemon, AgentProc, Path]) -> None:
    d, _, _ = mesh
    async with client(d) as c:
        await await_for(lambda: c.list_agents("echo"), timeout=20, what="the echo agent to register")
        for bad in ("../escape.txt", "/etc/passwd"):
            events = await run(c, Command("echo", Action.RUN, "x", options={"file": bad}))
            res = events[-1].result
            assert res is not None and not res.ok and "option file" in res.error, res


def chunk(task_id: str, path: str, data: bytes, size: int | None = None, sha: str | None = None) -> dict:
    return {
        "task_id": task_id,
        "file_chunk": pb.FileChunk(
            path=path,
            offset=0,
            data=data,
            eof=True,
            size=len(data) if size is None else size,
            sha256=hashlib.sha256(data).hexdigest() if sha is None else sha,
        ),
    }


async def test_uploads_are_checked(mesh: tuple[Daemon, AgentProc, Path]) -> None:
    """Bad paths, another agent's task, a wrong sha256 and the store's cap are refused with an
    ERROR naming the rule; the daemon records nothing and stays up."""
    d, _, _ = mesh
    async with (
        StubAgent(d.address, issue(d.certs, "uploader", "agent"), "uploader", "uptype") as m,
        StubAgent(d.address, issue(d.certs, "intruder", "agent"), "intruder", "othertype") as other,
        client(d) as c,
    ):
        fut = asyncio.ensure_future(run(c, Command("uptype", Action.RUN, "x")))
        run_env = await m.expect(pb.RUN)
        task_id = run_env.task.task_id
        e = other.send(pb.FILE_TRANSFER, **chunk(task_id, "evil.txt", b"evil"))
        err = await other.error_for(e)
        assert err.error.code == "PERMISSION_DENIED" and "upload-own-task" in err.error.message
        for bad, word in (("../x", "'..'"), ("/etc/passwd", "absolute"), ("a\\b", "backslash")):
            e = m.send(pb.FILE_TRANSFER, **chunk(task_id, bad, b"data"))
            err = await m.error_for(e)
            assert err.error.code == "INVALID_ARGUMENT" and word in err.error.message, err
        e = m.send(pb.FILE_TRANSFER, **chunk(task_id, "bad.txt", b"data", sha="0" * 64))
        err = await m.error_for(e)
        assert err.error.code == "DATA_LOSS" and "sha256 mismatch" in err.error.message
        big = os.urandom(CAP + 1)
        e = m.send(pb.FILE_TRANSFER, **chunk(task_id, "big.bin", big[:1000], size=len(big)))
        err = await m.error_for(e)
        assert err.error.code == "RESOURCE_EXHAUSTED" and "artifact_store_max_bytes" in err.error.message
        assert "artifact store full" in err.error.message
        # a good one still goes in, then the result
        m.send(pb.FILE_TRANSFER, **chunk(task_id, "ok.txt", b"fine"))
        m.send(
            pb.REPLY,
            task_id=task_id,
            correlation_id=run_env.id,
            reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED)),
        )
        await asyncio.wait_for(fut, 15)
        for path in ("evil.txt", "bad.txt", "big.bin"):
            with pytest.raises(ClientError):
                await c.fetch_artifact(task_id, path, d.workdir / "nope")
        got = await c.fetch_artifact(task_id, "ok.txt", d.workdir / "ok.txt")
        assert got.read_bytes() == b"fine"
    assert "artifact_store_full" in d.log()  # logged as an ERROR for the operator
    assert not list((d.data_dir / "artifacts" / "tmp").iterdir())  # refused uploads discarded


async def test_an_upload_cut_by_a_disconnect_is_discarded(mesh: tuple[Daemon, AgentProc, Path]) -> None:
    """Half a file, then the stream ends: nothing is recorded and the partial upload is
    dropped; sent again from offset 0 on a new stream, it is stored."""
    d, _, _ = mesh
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    first_half = pb.FileChunk(path="cut.bin", offset=0, data=data[:1500], size=len(data))
    rest = pb.FileChunk(path="cut.bin", offset=1500, data=data[1500:], eof=True, size=len(data), sha256=sha)
    tmp = d.data_dir / "artifacts" / "tmp"
    async with client(d) as c:
        async with StubAgent(d.address, issue(d.certs, "cutter", "agent"), "cutter", "cuttype") as m:
            fut = asyncio.ensure_future(run(c, Command("cuttype", Action.RUN, "x")))
            run_env = await m.expect(pb.RUN)
            task_id = run_env.task.task_id
            m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=first_half)
            ping = m.send(pb.PING, ping=pb.Ping())
            await m.expect(pb.PONG, lambda e: e.correlation_id == ping.id)  # the chunk was handled
            assert list(tmp.iterdir())  # in progress
        await await_for(lambda: not list(tmp.iterdir()), 10, what="the cut upload to be discarded")
        with pytest.raises(ClientError):
            await c.fetch_artifact(task_id, "cut.bin", d.workdir / "cut.bin")
        async with StubAgent(d.address, issue(d.certs, "cutter", "agent"), "cutter", "cuttype") as m:
            # continuing at offset 1500 on the new stream is refused: the daemon kept nothing
            e = m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=rest)
            err = await m.error_for(e)
            assert err.error.code == "INVALID_ARGUMENT" and "expected 0" in err.error.message
            m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=first_half)
            m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=rest)
            m.send(pb.REPLY, task_id=task_id, reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED)))
            await asyncio.wait_for(fut, 15)
        got = await c.fetch_artifact(task_id, "cut.bin", d.workdir / "cut.bin")
        assert got.read_bytes() == data


async def test_agentd_uploads_again_after_the_daemon_comes_back(
    daemon_factory, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    """The daemon dies while a remote agent's task runs; the agent finishes offline, and after
    reconnecting delivers the result and uploads the file: /fetch then works."""
    d: Daemon = daemon_factory("--no-spawn", "--reconnect-grace", "30").start()
    issue(d.certs, "alice", "client")
    a = start_agent(
        d, "lone", "echo", cwd=tmp_path / "host2", extra_args=["--workspace-root", str(tmp_path / "host2" / "ws")]
    )
    agents.append(a)
    events: list[TaskEvent] = []

    async def follow() -> None:
        async with client(d) as c:
            async for ev in c.submit(
                Command(
                    "echo", Action.RUN, "offline bytes", task_id="late-1", options={"file": "late.txt", "delay": "1.5"}
                )
            ):
                events.append(ev)

    async with client(d) as c:
        await await_for(lambda: c.list_agents("echo"), timeout=20, what="the echo agent to register")
    follower = asyncio.create_task(follow())
    await await_for(
        lambda: any(e.kind == EventKind.STATUS and e.agent_id == "lone" for e in events),
        15,
        what="the task to run on lone",
    )
    d.kill()
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await await_for(lambda: '"task_done"' in a.log(), 15, what="lone to finish offline")
    d.start(port=d.port)

    async def fetched() -> bool:
        async with client(d) as c:
            try:
                got = await c.fetch_artifact("late-1", "late.txt", tmp_path / "late.txt")
            except ClientError:
                return False
            return got.read_bytes() == b"offline bytes"

    await await_for(fetched, 20, interval=0.3, what="late.txt to reach the daemon's store")
    assert not (d.data_dir / "workspaces" / "late-1").exists()


def _autogpt(d: Daemon, cwd: Path, line: str) -> subprocess.CompletedProcess[str]:
    certs = d.certs
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "orchgpt_cli",
            "--orchestrator",
            d.address,
            "--ca",
            str(certs / "ca.pem"),
            "--cert",
            str(certs / "alice.pem"),
            "--key",
            str(certs / "alice-key.pem"),
            "-c",
            line,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


async def test_fetch_of_a_task_downloads_all_its_files_from_the_cli(
    mesh: tuple[Daemon, AgentProc, Path], tmp_path: Path
) -> None:
    """`/fetch ID` with no path: every file of the task, at its task-relative path under ./ID/,
    though the task ran on another host (issue 21)."""
    d, _, _ = mesh
    task_id = await echo_file(d, "all of it", "deep/er/a.txt")
    done = await asyncio.to_thread(_autogpt, d, tmp_path, f"/fetch {task_id}")
    assert done.returncode == 0, done.stdout + done.stderr
    got = tmp_path / task_id[:8] / "deep" / "er" / "a.txt"
    assert got.read_bytes() == b"all of it", done.stdout
    assert str(got) in done.stdout
    async with client(d) as c:
        events = await run(c, Command("echo", Action.RUN, "no file here"))
    none = await asyncio.to_thread(_autogpt, d, tmp_path, f"/fetch {events[-1].task_id}")
    assert none.returncode != 0 and "lists no files" in none.stdout + none.stderr
