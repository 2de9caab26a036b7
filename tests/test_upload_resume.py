"""Issue 21, resumable uploads: an upload cut by a disconnect is kept by the daemon; on its next
stream the agent asks where to go on (FILE_RESUME -> FILE_RESUME_AT) and sends only the rest.
Real daemon and TLS; the agent side is a stub speaking the protocol, and real agentd code
(agentd.uploads) against a real daemon."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd import uploads
from orchgpt.certs import paths_for
from orchgpt.client import MeshClient
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Action, Artifact, Command, TaskEvent, TaskResult, TaskState
from orchgpt.wire import codec
from orchgpt.wire.batching import Outbox
from tests.support import artifact_rows
from tests.support.mesh import Daemon, await_for, issue, make_certs
from tests.support.stub_agent import StubAgent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("resume")
    certs = make_certs(tmp / "certs")
    issue(certs, "alice", "client")
    d = Daemon(workdir=tmp, certs=certs, data_dir=tmp / "data", args=["--no-spawn"]).start()
    try:
        yield d
    finally:
        d.kill()


def client(d: Daemon) -> MeshClient:
    return MeshClient(d.address, paths_for(d.certs, "alice"), timeout=10)


async def run(c: MeshClient, cmd: Command) -> list[TaskEvent]:
    async def go() -> list[TaskEvent]:
        return [ev async for ev in c.submit(cmd)]

    return await asyncio.wait_for(go(), 15)


def resume_q(task_id: str, path: str, data: bytes) -> dict:  # type: ignore[type-arg]
    return {
        "task_id": task_id,
        "file_chunk": pb.FileChunk(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()),
    }


async def test_a_cut_upload_goes_on_from_the_daemons_offset(daemon: Daemon) -> None:
    d = daemon
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    first = pb.FileChunk(path="r.bin", offset=0, data=data[:1800], size=len(data), sha256=sha)
    tmp = d.data_dir / "artifacts" / "tmp"
    paths = issue(d.certs, "resumer", "agent")
    async with client(d) as c:
        async with StubAgent(d.address, paths, "resumer", "restype") as m:
            fut = asyncio.ensure_future(run(c, Command("restype", Action.RUN, "x")))
            run_env = await m.expect(pb.RUN)
            task_id = run_env.task.task_id
            m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=first)
            ping = m.send(pb.PING, ping=pb.Ping())
            await m.expect(pb.PONG, lambda e: e.correlation_id == ping.id)
        await await_for(lambda: d.log().count('"artifact_upload_kept"') == 1, 10, what="the cut upload kept")
        assert [p.stat().st_size for p in tmp.iterdir()] == [1800]  # kept for the agent
        async with StubAgent(d.address, paths, "resumer", "restype") as m:
            # another file's size or hash: not this upload, start over (and the other is dropped)
            q = m.send(pb.FILE_RESUME, **resume_q(task_id, "r.bin", data + b"!"))
            at = await m.expect(pb.FILE_RESUME_AT, lambda e: e.correlation_id == q.id)
            assert at.file_chunk.offset == 0 and not at.file_chunk.eof and at.sender == "orchgpt"
            assert not list(tmp.iterdir())
            m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=first)
            ping = m.send(pb.PING, ping=pb.Ping())
            await m.expect(pb.PONG, lambda e: e.correlation_id == ping.id)  # the chunk was handled
        await await_for(lambda: d.log().count('"artifact_upload_kept"') == 2, 10, what="the cut upload kept")
        async with StubAgent(d.address, paths, "resumer", "restype") as m:
            q = m.send(pb.FILE_RESUME, **resume_q(task_id, "r.bin", data))
            at = await m.expect(pb.FILE_RESUME_AT, lambda e: e.correlation_id == q.id)
            assert (at.file_chunk.offset, at.file_chunk.eof, at.file_chunk.path) == (
                1800,
                False,
                "r.bin",
            )
            m.send(
                pb.FILE_TRANSFER,
                task_id=task_id,
                file_chunk=pb.FileChunk(
                    path="r.bin",
                    offset=1800,
                    data=data[1800:],
                    eof=True,
                    size=len(data),
                    sha256=sha,
                ),
            )
            q = m.send(pb.FILE_RESUME, **resume_q(task_id, "r.bin", data))  # now: recorded
            at = await m.expect(pb.FILE_RESUME_AT, lambda e: e.correlation_id == q.id)
            assert at.file_chunk.eof
            intruder = StubAgent(d.address, issue(d.certs, "nosy", "agent"), "nosy", "restype")
            async with intruder as other:
                q = other.send(pb.FILE_RESUME, **resume_q(task_id, "r.bin", data))
                err = await other.error_for(q)
                assert err.error.code == "PERMISSION_DENIED" and "upload-own-task" in err.error.message
            m.send(
                pb.REPLY,
                task_id=task_id,
                reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED)),
            )
            await fut
        got = await c.fetch_artifact(task_id, "r.bin", d.workdir / "r.bin")
        assert got.read_bytes() == data
    assert "artifact_upload_resumed" in d.log()


async def test_agentd_uploads_resume_after_a_cut(daemon: Daemon, tmp_path: Path) -> None:
    """agentd.uploads against the daemon: a stream closed mid-file, then `upload` with the
    `Resumes` round trip on a new stream sends only the bytes the daemon lacks."""
    d = daemon
    data = os.urandom(5 * uploads.CHUNK + 123)
    (tmp_path / "big.bin").write_bytes(data)
    arts = [Artifact(path="big.bin", size=len(data))]
    kept = d.log().count('"artifact_upload_kept"')
    paths = issue(d.certs, "agentlike", "agent")
    async with client(d) as c:
        async with StubAgent(d.address, paths, "agentlike", "agtype") as m:
            fut = asyncio.ensure_future(run(c, Command("agtype", Action.RUN, "x")))
            task_id = (await m.expect(pb.RUN)).task.task_id
            f = open(tmp_path / "big.bin", "rb")
            with f:
                pieces = uploads._pieces(f, "big.bin", *uploads._digest(f))
                for _ in range(3):  # three chunks of six, then the stream ends
                    m.send(pb.FILE_TRANSFER, task_id=task_id, file_chunk=next(pieces))
            ping = m.send(pb.PING, ping=pb.Ping())
            await m.expect(pb.PONG, lambda e: e.correlation_id == ping.id)
        await await_for(lambda: d.log().count('"artifact_upload_kept"') == kept + 1, 10, what="the upload kept")
        async with StubAgent(d.address, paths, "agentlike", "agtype") as m:
            sent: list[pb.Envelope] = []

            def make_env(type_: int, **fields: object) -> pb.Envelope:
                env = codec.new_envelope(type_, "agentlike", **fields)
                sent.append(env)
                return env

            resumes = uploads.Resumes(lambda: m.out, make_env)

            async def answers() -> None:
                while True:
                    resumes.answer(await m.expect(pb.FILE_RESUME_AT, timeout=30))

            answerer = asyncio.create_task(answers())
            try:
                assert await uploads.upload(lambda: m.out, make_env, task_id, tmp_path, arts, resumes.ask)
                await await_for(lambda: _stored(d, task_id), 10, what="the file to be recorded")
            finally:
                answerer.cancel()
            m.send(
                pb.REPLY,
                task_id=task_id,
                reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED)),
            )
            await fut
        resent = sum(len(e.file_chunk.data) for e in sent if e.type == pb.FILE_TRANSFER)
        assert resent == len(data) - 3 * uploads.CHUNK  # only what the daemon lacked
        got = await c.fetch_artifact(task_id, "big.bin", tmp_path / "got.bin")
        assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def _stored(d: Daemon, task_id: str) -> bool:
    return bool(artifact_rows.files_of(d, task_id))  # on disk, or in the database on PostgreSQL


class _Link:
    """What agentd.uploads.reupload uses of a Link: the stream's outbox, envelopes, resumes."""

    def __init__(self, m: StubAgent) -> None:
        self.outbox: Outbox | None = m.out
        self.resumes = uploads.Resumes(lambda: self.outbox, self._env)
        self._answering: set[asyncio.Task[None]] = set()

    def _env(self, type_: int, **fields: object) -> pb.Envelope:
        return codec.new_envelope(type_, "relinker", **fields)

    async def answers(self, m: StubAgent) -> None:
        while True:
            self.resumes.answer(await m.expect(pb.FILE_RESUME_AT, timeout=30))


async def test_a_reupload_cut_again_is_kept_for_the_next_reconnect(daemon: Daemon, tmp_path: Path) -> None:
    """The re-upload after a reconnect is cut too (its REPLY long confirmed): the result stays in
    ``resumes.unsent`` (the link sends it again after the next REGISTERED) until the daemon says
    the file is recorded."""
    d = daemon
    data = os.urandom(40 * uploads.CHUNK)
    (tmp_path / "again.bin").write_bytes(data)
    r = TaskResult(
        "",
        TaskState.SUCCEEDED,
        workspace=str(tmp_path),
        artifacts=[Artifact(path="again.bin", size=len(data))],
    )
    paths = issue(d.certs, "relinker", "agent")
    async with client(d) as c:
        async with StubAgent(d.address, paths, "relinker", "relinktype") as m:
            fut = asyncio.ensure_future(run(c, Command("relinktype", Action.RUN, "x")))
            r.task_id = (await m.expect(pb.RUN)).task.task_id
            link = _Link(m)
            uploads.reupload(link, r)
            await await_for(lambda: r.task_id in link.resumes.unsent, 5, what="the re-upload to start")
            link.outbox = None  # the stream goes away mid-file
            m.out.close()
            await asyncio.gather(*link._answering)
            assert r.task_id in link.resumes.unsent  # kept for the next reconnect
        async with StubAgent(d.address, paths, "relinker", "relinktype") as m:
            link.outbox = m.out
            answerer = asyncio.create_task(link.answers(m))
            try:
                uploads.reupload(link, r)
                await asyncio.gather(*link._answering)
            finally:
                answerer.cancel()
            assert r.task_id not in link.resumes.unsent  # recorded: the daemon said so
            m.send(
                pb.REPLY,
                task_id=r.task_id,
                reply=pb.Reply(result=pb.TaskResult(task_id=r.task_id, state=pb.SUCCEEDED)),
            )
            await fut
        got = await c.fetch_artifact(r.task_id, "again.bin", tmp_path / "got.bin")
        assert got.read_bytes() == data
