"""Conformance: a minimal agent written against stubs generated from iac.proto alone
drives a real daemon through the rules of docs/protocol.md.

The stubs are made here with grpc_tools.protoc from proto/orchgpt/iac/v1/iac.proto into a
temporary directory and imported from there; nothing of orchgpt's codec, generated package
or agentd is used to speak the protocol. (The protobuf runtime has one descriptor pool per
process, so the message classes are shared with orchgpt's own copy when that is loaded:
they come from the same file, and a stale generated copy would fail to load here.)
"""

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

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "orchgpt" / "iac" / "v1" / "iac.proto"
SERVER_NAME = "localhost"  # the daemon's certificate names localhost; we dial 127.0.0.1
TYPE_RE_EXAMPLES = ("Bad Type", "9lives", "x" * 33)


# ---------------------------------------------------------------- stubs from the .proto
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
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(PROTO.relative_to(ROOT / "proto"))], check=True, cwd=ROOT)
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
    d = Daemon(workdir=work, certs=make_certs(work / "certs"), data_dir=work / "data",
               args=["--no-spawn", "--heartbeat-misses", "3"])
    d.start()
    yield d
    d.kill()


def _creds(paths: Any) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=paths.ca.read_bytes(), private_key=paths.key.read_bytes(),
                                        certificate_chain=paths.cert.read_bytes())


def _channel(daemon: Daemon, paths: Any) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(daemon.address, _creds(paths),
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- the minimal agent
class RawAgent:
    """An agent as an implementer would write it from the .proto: a Connect stream of Batches."""

    def __init__(self, pb: ModuleType, pb_grpc: ModuleType, daemon: Daemon, name: str, role: str = "agent",
                 certs_name: str | None = None) -> None:
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
        return self.pb.Envelope(id=uuid.uuid4().hex, sender=self.name, type=type_,
                                timestamp_ms=int(time.time() * 1000), **fields)

    def register_env(self, agent_type: str, **fields: Any) -> Any:
        return self.env(self.pb.REGISTER, register=self.pb.Register(agent_type=agent_type, host="conformance",
                                                                    **fields))

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
                raise AssertionError(f"stream ended ({self.code}: {self.details}) before a "
                                     f"{self.pb.MessageType.Name(type_)}; got "
                                     f"{[self.pb.MessageType.Name(e.type) for e in self.received]}")
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
        return self.stub.Submit(self.pb.SubmitRequest(command=self.pb.Command(
            agent_type=agent_type, action=self.pb.RUN_ACTION, input=text)))

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


# ---------------------------------------------------------------- handshake
async def test_register_is_answered_with_registered_and_the_agent_is_listed(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("hs").replace("-", "_")
    a = world.agent()
    registered = await a.connect(agent_type)
    r = registered.registered
    assert r.agent_id == a.name  # identity = certificate CN
    assert r.heartbeat_interval_ms == 500 and r.max_message_bytes > 0
    if "reconnect_grace_ms" in r.DESCRIPTOR.fields_by_name:  # announced since the reconnect rules
        assert r.reconnect_grace_ms > 0
    assert registered.sender == "orchgpt" and registered.recipient.agent_id == a.name
    c = world.client()
    agents = (await c.stub.ListAgents(pb.ListAgentsRequest(agent_type=agent_type), timeout=5)).agents
    assert [(x.agent_id, x.agent_type, x.state) for x in agents] == [(a.name, agent_type, pb.IDLE)]


async def test_a_connection_without_a_client_certificate_fails_at_the_tls_handshake(world) -> None:  # type: ignore[no-untyped-def]
    pb, d = world.pb, world.daemon
    creds = grpc.ssl_channel_credentials(root_certificates=(d.certs / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(d.address, creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]) as ch:
        call = ch.stream_stream("/orchgpt.iac.v1.Mesh/Connect", request_serializer=pb.Batch.SerializeToString,
                                response_deserializer=pb.Batch.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in call(iter([pb.Batch()]), timeout=5):
                pass
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_certificate_gets_an_error_envelope_then_permission_denied(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent(name="cli", certs_name="cli")
    a.start(a.register_env("echo"))
    code, details = await a.ends()
    err = await a.expect(pb.ERROR)
    assert err.error.code == "PERMISSION_DENIED" and "cannot connect as an agent" in err.error.message
    assert code == grpc.StatusCode.PERMISSION_DENIED and details == err.error.message


@pytest.mark.parametrize("first", ["heartbeat", "no_body", "empty_batch"])
async def test_a_bad_first_message_gets_an_error_envelope_then_the_status(world, first: str) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    if first == "heartbeat":
        env = a.env(pb.HEARTBEAT, heartbeat=pb.Heartbeat(state=pb.IDLE))
        a.start(env)
    elif first == "no_body":
        env = a.env(pb.REGISTER)
        a.start(env)
    else:
        env = None
        a.start(pb.Batch())
    code, details = await a.ends()
    err = await a.expect(pb.ERROR)
    assert err.error.code == "FAILED_PRECONDITION" and "REGISTER" in err.error.message
    if env is not None:
        assert err.correlation_id == env.id
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "REGISTER" in details


@pytest.mark.parametrize("bad_type", TYPE_RE_EXAMPLES)
async def test_an_agent_type_outside_the_rule_is_refused_naming_the_rule(world, bad_type: str) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    a.start(a.register_env(bad_type))
    code, details = await a.ends()
    err = await a.expect(pb.ERROR)
    assert err.error.code == "INVALID_ARGUMENT" and "invalid agent type" in err.error.message
    assert code == grpc.StatusCode.INVALID_ARGUMENT and repr(bad_type) in details


async def test_a_sender_that_is_not_the_certificate_gets_permission_denied(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    await a.connect(_uid("snd").replace("-", "_"))
    spoof = a.env(pb.HEARTBEAT, heartbeat=pb.Heartbeat(state=pb.IDLE))
    spoof.sender = "someone-else"
    a.send(spoof)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == spoof.id)
    assert err.error.code == "PERMISSION_DENIED"
    assert not a.ended.is_set()  # dropped, not disconnected


# ---------------------------------------------------------------- heartbeats, ping
async def test_heartbeats_keep_an_agent_and_ping_is_answered_with_an_echoing_pong(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    await a.connect(_uid("hb").replace("-", "_"))
    await a.expect(pb.PING, timeout=5)  # orchgpt pings every interval
    ping = a.env(pb.PING, ping=pb.Ping(sent_ms=12345))
    a.send(ping)
    pong = await a.expect(pb.PONG, lambda e: e.correlation_id == ping.id)
    assert pong.ping.sent_ms == 12345
    await asyncio.sleep(2.5)  # > interval x misses (1.5 s): still connected thanks to the heartbeats
    assert not a.ended.is_set(), (a.code, a.details)


async def test_a_silent_agent_gets_an_error_envelope_then_deadline_exceeded(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    await a.connect(_uid("quiet").replace("-", "_"), heartbeat=False)
    code, details = await a.ends(timeout=15)
    err = await a.expect(pb.ERROR)
    assert err.error.code == "DEADLINE_EXCEEDED" and "no heartbeat" in err.error.message
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no heartbeat" in details


async def test_a_second_connection_with_the_same_certificate_ends_the_first_with_an_error(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("dup").replace("-", "_")
    first = world.agent()
    await first.connect(agent_type)
    second = world.agent(name=first.name, certs_name=first.name)
    await second.connect(agent_type)
    code, details = await first.ends()
    err = await first.expect(pb.ERROR)
    assert err.error.code == "ABORTED" and "replaced by a new connection" in err.error.message
    assert code == grpc.StatusCode.ABORTED and "replaced" in details
    assert not second.ended.is_set()


# ---------------------------------------------------------------- RUN -> events -> REPLY
async def _run_one(world, agent: RawAgent, agent_type: str, text: str) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
    """Submit a task; return (the Submit call, the RUN the agent got)."""
    pb = world.pb
    call = Submitted(world.client().submit(agent_type, text))
    first = await call.first()
    run = await agent.expect(pb.RUN, lambda e: e.task.task_id == first.task_id)
    assert run.task_id == run.task.task_id and run.task.input == text and run.task.attempt == 1
    return call, run


@pytest.mark.parametrize("match", ["result_task_id", "envelope_task_id", "correlation_id"])
async def test_a_reply_is_matched_each_allowed_way_and_frees_the_agent(world, match: str) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("run").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    for n in range(2):  # the second task proves the agent was set free by the first REPLY
        call, run = await _run_one(world, a, agent_type, f"job {n}")
        task_id = run.task.task_id
        a.send(a.env(pb.TASK_EVENT, task_id=task_id, event=pb.TaskEvent(task_id=task_id, token=pb.TokenEvent(text="hi"))))
        result = pb.TaskResult(state=pb.SUCCEEDED, output=f"done {n}")
        reply = a.env(pb.REPLY, reply=pb.Reply(result=result))
        if match == "result_task_id":
            reply.reply.result.task_id = task_id
        elif match == "envelope_task_id":
            reply.task_id = task_id
        else:
            reply.correlation_id = run.id
        a.send(reply)
        envs = await _drain(call)
        results = _result_events(pb, envs)
        assert len(results) == 1, [e.event for e in envs]
        r = results[0].event.result
        assert r.result.state == pb.SUCCEEDED and r.result.output == f"done {n}" and r.result.task_id == task_id
        assert r.result.agent_id == a.name
    assert not [e for e in a.received if e.type == pb.ERROR]


async def _drain(sub: Submitted, timeout: float = 15.0) -> list[Any]:
    """Everything the Submit stream carries until it ends (with the task's result)."""
    async def all_() -> list[Any]:
        while True:
            batch = await sub.call.read()
            if batch is grpc.aio.EOF:
                return sub.seen
            sub.seen.extend(batch.envelopes)
    return await asyncio.wait_for(all_(), timeout)


async def test_a_reply_that_names_no_task_gets_invalid_argument_and_the_task_stays_open(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("noid").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    call, run = await _run_one(world, a, agent_type, "x")
    for reply in (a.env(pb.REPLY, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))),
                  a.env(pb.REPLY, correlation_id="not-a-run", reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))),
                  a.env(pb.REPLY, task_id=run.task_id)):
        a.send(reply)
        err = await a.expect(pb.ERROR, lambda e, r=reply: e.correlation_id == r.id)
        assert err.error.code == "INVALID_ARGUMENT"
        assert ("correlation_id" in err.error.message) or ("reply.result" in err.error.message), err.error.message
    # a REPLY naming two different tasks is refused as well
    two = a.env(pb.REPLY, task_id="other", reply=pb.Reply(result=pb.TaskResult(task_id=run.task_id, state=pb.SUCCEEDED)))
    a.send(two)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == two.id)
    assert err.error.code == "INVALID_ARGUMENT" and "two tasks" in err.error.message
    # the task is still the agent's: a correct REPLY finishes it
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.FAILED, error="nope"))))
    results = _result_events(pb, await _drain(call))
    assert [r.event.result.result.state for r in results] == [pb.FAILED]
    assert results[0].event.result.result.error == "nope"


async def test_a_reply_for_an_unknown_task_gets_not_found(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    await a.connect(_uid("unk").replace("-", "_"))
    reply = a.env(pb.REPLY, reply=pb.Reply(result=pb.TaskResult(task_id="no-such-task", state=pb.SUCCEEDED)))
    a.send(reply)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == reply.id)
    assert err.error.code == "NOT_FOUND" and "no-such-task" in err.error.message


async def test_event_task_id_may_be_on_the_envelope_only_and_is_required_somewhere(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("evid").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    call, run = await _run_one(world, a, agent_type, "x")
    nowhere = a.env(pb.TASK_EVENT, event=pb.TaskEvent(log=pb.LogEvent(text="lost?")))
    a.send(nowhere)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == nowhere.id)
    assert err.error.code == "INVALID_ARGUMENT" and "event.task_id" in err.error.message
    a.send(a.env(pb.TASK_EVENT, task_id=run.task_id, event=pb.TaskEvent(log=pb.LogEvent(text="found"))))
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    envs = await _drain(call)
    logs = [e.event for e in envs if e.event.HasField("log")]
    assert [(e.log.text, e.task_id) for e in logs] == [("found", run.task_id)]


async def test_a_result_event_from_an_agent_gets_an_error_saying_results_go_in_a_reply(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("resev").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    call, run = await _run_one(world, a, agent_type, "x")
    ev = a.env(pb.TASK_EVENT, task_id=run.task_id, event=pb.TaskEvent(
        task_id=run.task_id, result=pb.ResultEvent(result=pb.TaskResult(task_id=run.task_id, state=pb.SUCCEEDED))))
    a.send(ev)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == ev.id)
    assert err.error.code == "INVALID_ARGUMENT" and "REPLY" in err.error.message
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    assert len(_result_events(pb, await _drain(call))) == 1


async def test_any_event_from_the_assigned_agent_means_the_task_is_running(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("runst").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call, run = await _run_one(world, a, agent_type, "x")
    task = await c.stub.GetTask(pb.GetTaskRequest(task_id=run.task_id), timeout=5)
    assert task.task.state == pb.ASSIGNED
    a.send(a.env(pb.TASK_EVENT, task_id=run.task_id, event=pb.TaskEvent(token=pb.TokenEvent(text="t"))))
    deadline = time.monotonic() + 10
    while (await c.stub.GetTask(pb.GetTaskRequest(task_id=run.task_id), timeout=5)).task.state != pb.RUNNING:
        assert time.monotonic() < deadline, "the task did not leave ASSIGNED"
        await asyncio.sleep(0.05)
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    await _drain(call)


async def test_cancel_reaches_the_agent_with_the_task_id(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("cancel").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call, run = await _run_one(world, a, agent_type, "x")
    info = await c.stub.CancelTask(pb.CancelTaskRequest(task_id=run.task_id, reason="enough"), timeout=5)
    assert info.state == pb.CANCELLED
    cancel = await a.expect(pb.CANCEL, lambda e: e.task_id == run.task_id)
    assert cancel.cancel.reason == "enough"
    # the agent's late REPLY for a task settled elsewhere is not an error; the task stays cancelled
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.CANCELLED))))
    results = _result_events(pb, await _drain(call))
    assert [r.event.result.result.state for r in results] == [pb.CANCELLED]


# ---------------------------------------------------------------- typed events to clients
async def test_typed_events_reach_a_client_watch_with_the_agent_type(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("typed").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    watch = c.stub.Watch(pb.WatchRequest())
    await asyncio.sleep(0.3)  # the subscription is made when the call starts on the daemon
    call, run = await _run_one(world, a, agent_type, "x")
    tid = run.task_id
    bodies = [
        pb.TaskEvent(status=pb.StatusEvent(state=pb.RUNNING, text="running")),
        pb.TaskEvent(log=pb.LogEvent(text="a log line")),
        pb.TaskEvent(token=pb.TokenEvent(text="tok")),
        pb.TaskEvent(step=pb.StepEvent(text="step 1"), data={"tool": "write_file"}),
        pb.TaskEvent(artifact=pb.ArtifactEvent(artifact=pb.Artifact(path="a.txt", size=1, kind="document"),
                                               text="a.txt")),
        pb.TaskEvent(approval=pb.ApprovalEvent(request=pb.ApprovalRequest(request_id="r1", tool="run"),
                                               text="run it?")),
    ]
    for b in bodies:
        b.task_id = tid
        a.send(a.env(pb.TASK_EVENT, task_id=tid, event=b))
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED, output="ok"))))
    await _drain(call)
    got: list[Any] = []

    async def read() -> None:
        async for batch in watch:
            got.extend(e.event for e in batch.envelopes if e.task_id == tid)
            if any(e.HasField("result") for e in got):
                return

    await asyncio.wait_for(read(), 15)
    watch.cancel()
    kinds = [e.WhichOneof("body") for e in got]
    assert kinds == ["status", "status", "status", "log", "token", "step", "artifact", "approval", "result"], kinds
    assert [e.status.state for e in got[:2]] == [pb.QUEUED, pb.ASSIGNED]
    assert [e.seq for e in got] == list(range(1, len(got) + 1))
    assert all(e.agent_type == agent_type and e.task_id == tid for e in got)
    assert all(e.agent_id == a.name for e in got[1:])
    assert got[5].data["tool"] == "write_file" and got[6].artifact.artifact.path == "a.txt"
    assert got[7].approval.request.request_id == "r1"
    assert got[8].result.result.output == "ok" and got[8].result.result.state == pb.SUCCEEDED
    # the stored events come back typed the same way
    stored = (await c.stub.GetTask(pb.GetTaskRequest(task_id=tid, with_events=True), timeout=5)).events
    assert [e.WhichOneof("body") for e in stored] == kinds
    assert all(e.agent_type == agent_type for e in stored)


# ---------------------------------------------------------------- reflection
async def test_reflection_v1_and_v1alpha_list_the_services_over_mtls(world) -> None:  # type: ignore[no-untyped-def]
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as r

    ch = world.client().channel
    want = {"orchgpt.iac.v1.Mesh", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"}
    for version in ("v1", "v1alpha"):
        # The two versions' messages are the same on the wire; only the service name differs.
        info = ch.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                request_serializer=r.ServerReflectionRequest.SerializeToString,
                                response_deserializer=r.ServerReflectionResponse.FromString)

        async def reqs():  # type: ignore[no-untyped-def]
            yield r.ServerReflectionRequest(list_services="")
            yield r.ServerReflectionRequest(file_containing_symbol="orchgpt.iac.v1.Mesh")

        out = [x async for x in info(reqs(), timeout=5)]
        assert want <= {s.name for s in out[0].list_services_response.service}, version
        fd = descriptor_pb2.FileDescriptorProto.FromString(out[1].file_descriptor_response.file_descriptor_proto[0])
        assert fd.package == "orchgpt.iac.v1" and "TaskEvent" in [m.name for m in fd.message_type]


# ---------------------------------------------------------------- delegation, approval, terminate
async def test_delegate_task_runs_a_sub_task_and_its_result_comes_back_as_a_reply(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    parent_type, child_type = _uid("par").replace("-", "_"), _uid("chi").replace("-", "_")
    p, ch = world.agent(), world.agent()
    await p.connect(parent_type)
    await ch.connect(child_type)
    call, run = await _run_one(world, p, parent_type, "plan")
    # delegating under a task one does not run is refused
    stray = p.env(pb.DELEGATE_TASK, task=pb.TaskSpec(agent_type=child_type, input="x", parent_task_id="not-mine"))
    p.send(stray)
    err = await p.expect(pb.ERROR, lambda e: e.correlation_id == stray.id)
    assert err.error.code == "PERMISSION_DENIED"
    delegate = p.env(pb.DELEGATE_TASK, task_id=run.task_id,
                     task=pb.TaskSpec(agent_type=child_type, action=pb.RUN_ACTION, input="sub"))
    p.send(delegate)
    sub = await ch.expect(pb.RUN)
    assert sub.task.parent_task_id == run.task_id and sub.task.input == "sub"
    ch.send(ch.env(pb.REPLY, correlation_id=sub.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED,
                                                                                          output="sub done"))))
    back = await p.expect(pb.REPLY, lambda e: e.correlation_id == delegate.id)
    assert back.reply.result.output == "sub done" and back.reply.result.task_id == sub.task_id
    p.send(p.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    envs = await _drain(call)
    # the parent's watchers saw the sub-task's events too
    assert any(e.task_id == sub.task_id for e in envs)


async def test_an_approval_event_is_answered_with_approval_response(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("appr").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call, run = await _run_one(world, a, agent_type, "x")
    a.send(a.env(pb.TASK_EVENT, task_id=run.task_id, event=pb.TaskEvent(approval=pb.ApprovalEvent(
        request=pb.ApprovalRequest(request_id="req-1", tool="shell", summary="ls"), text="ls"))))
    await c.stub.Approve(pb.ApproveRequest(task_id=run.task_id, response=pb.ApprovalResponse(
        request_id="req-1", decision=pb.APPROVE_NEXT, count=3)), timeout=5)
    resp = await a.expect(pb.APPROVAL_RESPONSE)
    assert resp.task_id == run.task_id
    assert (resp.approval_response.request_id, resp.approval_response.decision, resp.approval_response.count) == \
        ("req-1", pb.APPROVE_NEXT, 3)
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    await _drain(call)


async def test_terminate_reaches_every_agent_of_the_type(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("term").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call = c.stub.Submit(pb.SubmitRequest(command=pb.Command(agent_type=agent_type, action=pb.TERMINATE_ACTION)))
    envs = await _drain(Submitted(call))
    assert _result_events(pb, envs)[0].event.result.result.state == pb.SUCCEEDED
    term = await a.expect(pb.TERMINATE)
    assert term.terminate.reason


# ---------------------------------------------------------------- timeouts and shutdown (in-process daemon)
@pytest.fixture
async def inproc(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A daemon in this process, so that its first-message timeout can be shortened."""
    from orchgpt.config import Settings
    from orchgpt.server import OrchgptServer

    certs = make_certs(tmp_path / "certs")
    s = Settings(certs=certs, data_dir=tmp_path / "data", listen="127.0.0.1:0", spawn=False, local_model="off",
                 heartbeat_interval=0.5, grace_period=0)
    srv = OrchgptServer(s)
    await srv.start()
    d = Daemon(workdir=tmp_path, certs=certs, data_dir=tmp_path / "data")
    d.port = srv.port
    yield srv, d
    await srv.stop(grace=0)


async def test_no_register_in_time_gets_an_error_envelope_then_deadline_exceeded(stubs, inproc) -> None:  # type: ignore[no-untyped-def]
    pb, pb_grpc = stubs
    srv, d = inproc
    srv.servicer.first_message_timeout = 0.5
    a = RawAgent(pb, pb_grpc, d, _uid("late"))
    try:
        a._tasks.append(asyncio.create_task(a._read(a.stub.Connect(a._requests()))))  # and send nothing
        code, details = await a.ends()
        err = await a.expect(pb.ERROR)
        assert err.error.code == "DEADLINE_EXCEEDED" and "no REGISTER" in err.error.message
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no REGISTER" in details
    finally:
        await a.close()


async def test_a_daemon_shutting_down_ends_agent_streams_with_an_error_then_unavailable(stubs, inproc) -> None:  # type: ignore[no-untyped-def]
    pb, pb_grpc = stubs
    srv, d = inproc
    a = RawAgent(pb, pb_grpc, d, _uid("bye"))
    try:
        await a.connect("bye")
        await srv.stop(grace=0)
        code, details = await a.ends()
        err = await a.expect(pb.ERROR)
        assert err.error.code == "UNAVAILABLE" and "shutting down" in err.error.message
        assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
    finally:
        await a.close()
