"""Issue 10, finding 6: malformed input gets INVALID_ARGUMENT naming the message or field,
the agent's stream survives a bad envelope, and the daemon stays up (with a bounded fuzz)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from orchgpt import codec
from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.tls import secure_channel
from tests.support.mesh import Daemon, issue

pytestmark = pytest.mark.timeout(90)

M = "/orchgpt.iac.v1.Mesh/"
UNARY = ["ListAgents", "GetTask", "ListTasks", "CancelTask", "Approve", "ListSessions", "PublishSession"]
SERVER_STREAM = ["Submit", "Watch", "FetchArtifact"]
UNDECODABLE = b"\x0a\x05ab"  # field 1, length 5, only 2 bytes follow


async def _raw_call(ch: grpc.aio.Channel, method: str, data: bytes, timeout: float = 5.0) -> grpc.StatusCode:
    try:
        if method in SERVER_STREAM:
            call = ch.unary_stream(M + method)(data, timeout=timeout)
            async for _ in call:
                pass
        else:
            await ch.unary_unary(M + method)(data, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            _raw_call.last_detail = exc.details() or ""  # type: ignore[attr-defined]
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", UNARY + SERVER_STREAM)
async def test_undecodable_requests_get_invalid_argument_naming_the_message(daemon_factory, method: str) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn").start()
    async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as ch:
        code = await _raw_call(ch, method, UNDECODABLE)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, code
        expected = {
            "Submit": "SubmitRequest",
            "Watch": "WatchRequest",
            "FetchArtifact": "FetchArtifactRequest",
            "ListAgents": "ListAgentsRequest",
            "GetTask": "GetTaskRequest",
            "ListTasks": "ListTasksRequest",
            "CancelTask": "CancelTaskRequest",
            "Approve": "ApproveRequest",
            "ListSessions": "ListSessionsRequest",
            "PublishSession": "PublishSessionRequest",
        }[method]
        assert f"malformed {expected}" in _raw_call.last_detail  # type: ignore[attr-defined]
        await pb_grpc.MeshStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)  # still serving


async def test_nul_bytes_and_unknown_enums_in_client_requests(daemon: Daemon) -> None:
    async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as ch:
        stub = pb_grpc.MeshStub(ch)
        cases = [
            (stub.GetTask(pb.GetTaskRequest(task_id="a\x00b"), timeout=5), "task_id"),
            (stub.CancelTask(pb.CancelTaskRequest(task_id="a\x00b"), timeout=5), "task_id"),
            (
                stub.Approve(pb.ApproveRequest(task_id="t", response=pb.ApprovalResponse(decision=99)), timeout=5),
                "response.decision",
            ),
        ]
        for coro, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await coro
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (ei.value.details() or "")
        streams = [
            (stub.FetchArtifact(pb.FetchArtifactRequest(task_id="t", path="a\x00b"), timeout=5), "path"),
            (
                stub.Submit(
                    pb.SubmitRequest(command=pb.Command(agent_type="echo", action=pb.RUN_ACTION, task_id="x\x00y")),
                    timeout=5,
                ),
                "command.task_id",
            ),
            (
                stub.Submit(pb.SubmitRequest(command=pb.Command(agent_type="echo", action=42)), timeout=5),
                "command.action",
            ),
            (stub.Watch(pb.WatchRequest(task_id="\x00"), timeout=5), "task_id"),
        ]
        for call, field in streams:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in call:
                    pass
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, ei.value)
            assert field in (ei.value.details() or ""), (field, ei.value.details())


class RawAgent:
    """An agent speaking raw frames on Connect (for frames that are not valid protobuf)."""

    def __init__(self, ch: grpc.aio.Channel, name: str) -> None:
        self.name = name
        self.q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.call = ch.stream_stream(M + "Connect")(self._frames())
        self.q.put_nowait(
            pb.Batch(
                envelopes=[codec.new_envelope(pb.REGISTER, name, register=pb.Register(agent_type="fuzztype"))]
            ).SerializeToString()
        )

    async def _frames(self) -> AsyncIterator[bytes]:
        while True:
            f = await self.q.get()
            if f is None:
                return
            yield f

    def send(self, frame: bytes | pb.Envelope) -> None:
        if isinstance(frame, pb.Envelope):
            frame = pb.Batch(envelopes=[frame]).SerializeToString()
        self.q.put_nowait(frame)

    async def until(self, pred, timeout: float = 10.0) -> list[pb.Envelope]:  # type: ignore[no-untyped-def]
        """Read envelopes until one satisfies ``pred``; returns all read."""
        got: list[pb.Envelope] = []

        async def run() -> list[pb.Envelope]:
            while True:
                raw = await self.call.read()
                if raw is grpc.aio.EOF:
                    raise AssertionError(f"stream ended; got {got}")
                for env in pb.Batch.FromString(raw).envelopes:
                    got.append(env)
                    if pred(env):
                        return got

        return await asyncio.wait_for(run(), timeout)

    async def alive(self) -> None:
        """A PING is answered by a PONG: the stream is kept."""
        ping = codec.new_envelope(pb.PING, self.name, ping=pb.Ping(sent_ms=1))
        self.send(ping)
        await self.until(lambda e: e.type == pb.PONG and e.correlation_id == ping.id)


async def test_bad_frames_and_unknown_enums_on_connect_get_an_error_and_the_stream_is_kept(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--heartbeat-interval", "30").start()
    name = "oddball"
    async with secure_channel(daemon.address, issue(daemon.certs, name, "agent")) as ch:
        a = RawAgent(ch, name)
        await a.until(lambda e: e.type == pb.REGISTERED)
        a.send(UNDECODABLE)
        got = await a.until(lambda e: e.type == pb.ERROR)
        assert got[-1].error.code == "INVALID_ARGUMENT" and "malformed Batch" in got[-1].error.message
        await a.alive()
        bad = [
            (codec.new_envelope(99, name), "envelope.type"),
            (codec.new_envelope(99, "someone-else"), "envelope.type"),
            (
                codec.new_envelope(pb.DELEGATE_TASK, name, task=pb.TaskSpec(agent_type="echo", action=77)),
                "envelope.task.action",
            ),
            (
                codec.new_envelope(
                    pb.TASK_EVENT, name, task_id="t", event=pb.TaskEvent(task_id="t", status=pb.StatusEvent(state=66))
                ),
                "envelope.event.status.state",
            ),
            (
                codec.new_envelope(pb.REPLY, name, reply=pb.Reply(result=pb.TaskResult(task_id="t", state=42))),
                "envelope.reply.result.state",
            ),
            (codec.new_envelope(pb.COMMAND, name, to_agent="x\x00y", payload=b"p"), "envelope.recipient.agent_id"),
            (
                codec.new_envelope(
                    pb.TASK_EVENT, name, task_id="t\x00", event=pb.TaskEvent(task_id="t", log=pb.LogEvent())
                ),
                "envelope.task_id",
            ),
        ]
        for env, field in bad:
            a.send(env)
            got = await a.until(lambda e, env=env: e.type == pb.ERROR and e.correlation_id == env.id)
            assert got[-1].error.code == "INVALID_ARGUMENT", got[-1]
            assert field in got[-1].error.message, (field, got[-1].error.message)
            await a.alive()
        a.send(None)  # type: ignore[arg-type]
    assert "Traceback" not in daemon.log()


# ------------------------------------------------------------------ fuzzing
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
_ids = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_ints = st.integers(min_value=-3, max_value=2**31 - 1)
envelopes = st.builds(
    lambda type_, task_id, corr, target, body, enum1, enum2, text: _envelope(
        type_, task_id, corr, target, body, enum1, enum2, text
    ),
    _ints,
    _ids,
    _ids,
    st.sampled_from(["", "agent_id", "agent_type", "broadcast", "client_id"]),
    st.sampled_from(
        ["", "task", "event", "reply", "command", "approval_response", "payload", "register", "heartbeat", "file_chunk"]
    ),
    _ints,
    _ints,
    _ids,
)


def _envelope(type_: int, task_id: str, corr: str, target: str, body: str, e1: int, e2: int, text: str) -> pb.Envelope:
    env = pb.Envelope(id=codec.fast_id(), sender="fuzzer", type=type_, task_id=task_id, correlation_id=corr)
    if target == "broadcast":
        env.recipient.broadcast = True
    elif target:
        setattr(env.recipient, target, text)
    if body == "task":
        env.task.CopyFrom(pb.TaskSpec(agent_type=text or "echo", action=e1, input=text, parent_task_id=task_id))
    elif body == "event":
        kinds = ("status", "log", "token", "step", "artifact", "approval", "result", "")
        kind = kinds[e1 % len(kinds)]
        ev = pb.TaskEvent(task_id=task_id)
        if kind == "status":
            ev.status.CopyFrom(pb.StatusEvent(state=e2, text=text))
        elif kind == "result":
            ev.result.result.CopyFrom(pb.TaskResult(task_id=text, state=e2))
        elif kind == "artifact":
            ev.artifact.artifact.path = text
        elif kind == "approval":
            ev.approval.request.request_id = text
        elif kind:
            getattr(ev, kind).text = text
        env.event.CopyFrom(ev)
    elif body == "reply":
        env.reply.result.CopyFrom(pb.TaskResult(task_id=task_id, state=e1, output=text))
    elif body == "command":
        env.command.CopyFrom(pb.Command(agent_type=text, action=e1, input=text))
    elif body == "approval_response":
        env.approval_response.CopyFrom(pb.ApprovalResponse(request_id=text, decision=e1))
    elif body == "payload":
        env.payload = text.encode()
    elif body == "register":
        env.register.CopyFrom(pb.Register(agent_type=text, current_task=task_id))
    elif body == "heartbeat":
        env.heartbeat.CopyFrom(pb.Heartbeat(state=e2, current_task=task_id))
    elif body == "file_chunk":
        env.file_chunk.CopyFrom(pb.FileChunk(path=text, data=text.encode()))
    return env


def test_fuzz_random_bytes_and_envelopes_never_get_unknown_or_internal(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    # a long heartbeat interval: the raw agent sends none while the client RPCs are fuzzed
    daemon: Daemon = daemon_factory("--no-spawn", "--heartbeat-interval", "30").start()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    agent_paths = issue(daemon.certs, "fuzzer", "agent")
    try:

        async def start() -> tuple[grpc.aio.Channel, grpc.aio.Channel, RawAgent]:
            ch = secure_channel(daemon.address, paths_for(daemon.certs, "cli"))
            agent_ch = secure_channel(daemon.address, agent_paths)
            a = RawAgent(agent_ch, "fuzzer")
            await a.until(lambda e: e.type == pb.REGISTERED)
            return ch, agent_ch, a

        ch, agent_ch, agent = loop.run_until_complete(start())

        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(method=st.sampled_from(UNARY + SERVER_STREAM), data=st.binary(max_size=200))
        def unary(method: str, data: bytes) -> None:
            code = loop.run_until_complete(_raw_call(ch, method, data, timeout=1.0))
            assert code not in BAD_CODES, (method, data, code)

        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(frame=st.one_of(st.binary(max_size=200), envelopes))
        def connect(frame: bytes | pb.Envelope) -> None:
            agent.send(frame)
            loop.run_until_complete(agent.alive())  # the stream survives every frame

        unary()
        connect()

        async def legit() -> None:
            async with daemon.client() as c:
                await c.check()
                await c.list_tasks()
                await c.list_agents()
            agent.send(None)  # type: ignore[arg-type]
            await ch.close()
            await agent_ch.close()

        loop.run_until_complete(legit())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert "Traceback" not in daemon.log()
