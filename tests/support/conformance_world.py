"""The conformance tests' world (tests/test_conformance_*.py): stubs generated from iac.proto
alone, a daemon, and a minimal agent and client written against those stubs only."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from orchgpt.certs import paths_for
from tests.support.mesh import Daemon, issue, make_certs

ROOT = Path(__file__).resolve().parents[2]


PROTO = ROOT / "proto" / "orchgpt" / "iac" / "v1" / "iac.proto"


SERVER_NAME = "localhost"  # the daemon's certificate names localhost; we dial 127.0.0.1


TYPE_RE_EXAMPLES = ("Bad Type", "9lives", "x" * 33)


def _load(name: str, path: Path, source: str | None = None) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    if source is None:
        spec.loader.exec_module(mod)
    else:
        exec(compile(source, str(path), "exec"), mod.__dict__)
    sys.modules[name] = mod
    return mod


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO.relative_to(ROOT / "proto")),
        ],
        check=True,
        cwd=ROOT,
    )
    gen = out / "orchgpt" / "iac" / "v1"
    pb = _load("conformance_iac_pb2", gen / "iac_pb2.py")
    grpc_src = (gen / "iac_pb2_grpc.py").read_text()
    grpc_src = grpc_src.replace("from orchgpt.iac.v1 import iac_pb2 as", "import conformance_iac_pb2 as")
    assert "from orchgpt" not in grpc_src, "the generated stub still imports orchgpt"
    pb_grpc = _load("conformance_iac_pb2_grpc", gen / "iac_pb2_grpc.py", grpc_src)
    return pb, pb_grpc


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One daemon for the module: no spawning (every agent here is ours), heartbeats every 0.5 s."""
    work = tmp_path_factory.mktemp("conformance")
    d = Daemon(
        workdir=work,
        certs=make_certs(work / "certs"),
        data_dir=work / "data",
        args=["--no-spawn", "--heartbeat-misses", "3"],
    )
    d.start()
    yield d
    d.kill()


def _creds(paths: Any) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=paths.ca.read_bytes(),
        private_key=paths.key.read_bytes(),
        certificate_chain=paths.cert.read_bytes(),
    )


def _channel(daemon: Daemon, paths: Any) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        daemon.address, _creds(paths), options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    )


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class RawAgent:
    """An agent as an implementer would write it from the .proto: a Connect stream of Batches."""

    def __init__(
        self,
        pb: ModuleType,
        pb_grpc: ModuleType,
        daemon: Daemon,
        name: str,
        role: str = "agent",
        certs_name: str | None = None,
    ) -> None:
        self.pb, self.name = pb, name
        paths = paths_for(daemon.certs, certs_name) if certs_name else issue(daemon.certs, name, role)
        self.channel = _channel(daemon, paths)
        self.stub = pb_grpc.MeshStub(self.channel)
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.received: list[Any] = []
        self._arrived = asyncio.Event()
        self.ended = asyncio.Event()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self._tasks: list[asyncio.Task[Any]] = []

    def env(self, type_: int, **fields: Any) -> Any:
        return self.pb.Envelope(
            id=uuid.uuid4().hex, sender=self.name, type=type_, timestamp_ms=int(time.time() * 1000), **fields
        )

    def register_env(self, agent_type: str, **fields: Any) -> Any:
        return self.env(
            self.pb.REGISTER, register=self.pb.Register(agent_type=agent_type, host="conformance", **fields)
        )

    def send(self, *envs: Any) -> None:
        self.out.put_nowait(self.pb.Batch(envelopes=list(envs)))

    async def _requests(self):  # type: ignore[no-untyped-def]
        while True:
            b = await self.out.get()
            if b is None:
                return
            yield b

    async def _read(self, call: Any) -> None:
        try:
            async for batch in call:
                self.received.extend(batch.envelopes)
                self._arrived.set()
            self.code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        finally:
            self.ended.set()
            self._arrived.set()

    def start(self, first: Any) -> None:
        if isinstance(first, self.pb.Batch):
            self.out.put_nowait(first)
        else:
            self.send(first)
        self._tasks.append(asyncio.create_task(self._read(self.stub.Connect(self._requests()))))

    async def connect(self, agent_type: str, heartbeat: bool = True, **fields: Any) -> Any:
        """REGISTER and wait for REGISTERED; optionally heartbeat at the announced interval."""
        reg = self.register_env(agent_type, **fields)
        self.start(reg)
        registered = await self.expect(self.pb.REGISTERED)
        assert registered.correlation_id == reg.id
        if heartbeat:
            self._tasks.append(asyncio.create_task(self._heartbeats(registered.registered.heartbeat_interval_ms)))
        return registered

    async def _heartbeats(self, interval_ms: int) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            self.send(self.env(self.pb.HEARTBEAT, heartbeat=self.pb.Heartbeat(state=self.pb.IDLE)))

    async def expect(self, type_: int, pred: Any = None, timeout: float = 10.0) -> Any:
        """The first received envelope of ``type_`` (matching ``pred``) not taken before."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.received):
                if e.type == type_ and (pred is None or pred(e)):
                    return self.received.pop(i)
            if self.ended.is_set():
                raise AssertionError(
                    f"stream ended ({self.code}: {self.details}) before a "
                    f"{self.pb.MessageType.Name(type_)}; got "
                    f"{[self.pb.MessageType.Name(e.type) for e in self.received]}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {self.pb.MessageType.Name(type_)} within {timeout}s")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    async def ends(self, timeout: float = 10.0) -> tuple[grpc.StatusCode | None, str]:
        await asyncio.wait_for(self.ended.wait(), timeout)
        return self.code, self.details

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        self.out.put_nowait(None)
        await self.channel.close(grace=None)


class RawClient:
    """A client (CLI role) written against the same stubs."""

    def __init__(self, pb: ModuleType, pb_grpc: ModuleType, daemon: Daemon) -> None:
        self.pb = pb
        self.channel = _channel(daemon, paths_for(daemon.certs, "cli"))
        self.stub = pb_grpc.MeshStub(self.channel)

    def submit(self, agent_type: str, text: str) -> Any:
        return self.stub.Submit(
            self.pb.SubmitRequest(command=self.pb.Command(agent_type=agent_type, action=self.pb.RUN_ACTION, input=text))
        )

    async def close(self) -> None:
        await self.channel.close(grace=None)


@pytest.fixture
async def world(stubs: tuple[ModuleType, ModuleType], mesh: Daemon):  # type: ignore[no-untyped-def]
    pb, pb_grpc = stubs
    made: list[Any] = []

    class World:
        def agent(self, name: str | None = None, **kw: Any) -> RawAgent:
            a = RawAgent(pb, pb_grpc, mesh, name or _uid("conf"), **kw)
            made.append(a)
            return a

        def client(self) -> RawClient:
            c = RawClient(pb, pb_grpc, mesh)
            made.append(c)
            return c

    w = World()
    w.pb = pb  # type: ignore[attr-defined]
    w.daemon = mesh  # type: ignore[attr-defined]
    yield w
    for x in made:
        await x.close()


class Submitted:
    """A Submit call and the envelopes read from it so far."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.seen: list[Any] = []

    async def first(self) -> Any:
        batch = await asyncio.wait_for(self.call.read(), 10)
        self.seen.extend(batch.envelopes)
        return batch.envelopes[0]


def _result_events(pb: ModuleType, envs: list[Any]) -> list[Any]:
    return [e for e in envs if e.type == pb.TASK_EVENT and e.event.HasField("result")]


async def _run_one(world, agent: RawAgent, agent_type: str, text: str) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
    """Submit a task; return (the Submit call, the RUN the agent got)."""
    pb = world.pb
    call = Submitted(world.client().submit(agent_type, text))
    first = await call.first()
    run = await agent.expect(pb.RUN, lambda e: e.task.task_id == first.task_id)
    assert run.task_id == run.task.task_id and run.task.input == text and run.task.attempt == 1
    return call, run


async def _drain(sub: Submitted, timeout: float = 15.0) -> list[Any]:
    """Everything the Submit stream carries until it ends (with the task's result)."""

    async def all_() -> list[Any]:
        while True:
            batch = await sub.call.read()
            if batch is grpc.aio.EOF:
                return sub.seen
            sub.seen.extend(batch.envelopes)

    return await asyncio.wait_for(all_(), timeout)


@pytest.fixture
async def inproc(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A daemon in this process, so that its first-message timeout can be shortened."""
    from orchgpt.config import Settings
    from orchgpt.server import OrchgptServer

    certs = make_certs(tmp_path / "certs")
    s = Settings(
        certs=certs,
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        spawn=False,
        local_model="off",
        heartbeat_interval=0.5,
        grace_period=0,
    )
    srv = OrchgptServer(s)
    await srv.start()
    d = Daemon(workdir=tmp_path, certs=certs, data_dir=tmp_path / "data")
    d.port = srv.port
    yield srv, d
    await srv.stop(grace=0)
