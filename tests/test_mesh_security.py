"""Mutual TLS on every connection; identity from the certificate, never from the message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from orchgpt import codec
from orchgpt.batching import Outbox
from orchgpt.certs import CertPaths, init_dir, paths_for
from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import Action, Command
from orchgpt.tls import channel_options, secure_channel
from tests.support.mesh import Daemon, issue

pytestmark = pytest.mark.timeout(60)


async def test_no_client_certificate_is_refused_at_the_handshake(daemon: Daemon) -> None:
    ca = (daemon.certs / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)  # no client cert
    async with grpc.aio.secure_channel(daemon.address, creds, options=channel_options(daemon.address)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await pb_grpc.MeshStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_dir(other)
    # trust the real server, but present a client certificate of another CA
    paths = CertPaths(daemon.certs / "ca.pem", other / "cli.pem", other / "cli-key.pem")
    client = MeshClient(daemon.address, paths, timeout=5)
    with pytest.raises(ClientError) as ei:
        await client.list_agents()
    await client.close()
    assert ei.value.code == "UNAVAILABLE"
    assert "TLS handshake" in str(ei.value) or "refused" in str(ei.value)
    # and the daemon is still up for a legitimate client
    async with daemon.client() as good:
        await good.check()


async def test_a_client_certificate_cannot_register_as_an_agent(daemon: Daemon) -> None:
    async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as ch:
        out = Outbox()
        out.put(codec.new_envelope(pb.REGISTER, "cli", register=pb.Register(agent_type="echo")))
        call = pb_grpc.MeshStub(ch).Connect(out.iterate())
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in call:
                pass
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot connect as an agent" in (ei.value.details() or "")


async def _raw_agent(daemon: Daemon, name: str, agent_type: str = "rawtype") -> tuple[grpc.aio.Channel, Outbox, object]:
    paths = issue(daemon.certs, name, "agent")
    ch = secure_channel(daemon.address, paths)
    out = Outbox()
    out.put(codec.new_envelope(pb.REGISTER, name, register=pb.Register(agent_type=agent_type)))
    call = pb_grpc.MeshStub(ch).Connect(out.iterate())
    return ch, out, call


async def _next(call: object, want: int, timeout: float = 5.0) -> pb.Envelope:
    async def find() -> pb.Envelope:
        async for batch in call:  # type: ignore[attr-defined]
            for env in batch.envelopes:
                if env.type == want:
                    return env
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout)


async def test_a_spoofed_sender_is_rejected_and_dropped(daemon: Daemon) -> None:
    ch_a, out_a, call_a = await _raw_agent(daemon, "agent-a")
    ch_b, out_b, call_b = await _raw_agent(daemon, "agent-b")
    try:
        await _next(call_a, pb.REGISTERED)
        await _next(call_b, pb.REGISTERED)
        # agent-a claims to be agent-b when talking to agent-b
        spoof = codec.new_envelope(pb.COMMAND, "agent-b", to_agent="agent-b", payload=b"x")
        out_a.put(spoof)
        err = await _next(call_a, pb.ERROR)
        assert err.error.code == "PERMISSION_DENIED"
        assert err.correlation_id == spoof.id
        assert "does not match the certificate identity" in err.error.message
        # an honest message from agent-a does arrive at agent-b
        honest = codec.new_envelope(pb.COMMAND, "agent-a", to_agent="agent-b", payload=b"hello b")
        out_a.put(honest)
        got = await _next(call_b, pb.COMMAND)
        assert got.id == honest.id and got.payload == b"hello b" and got.sender == "agent-a"
    finally:
        out_a.close()
        out_b.close()
        await ch_a.close()
        await ch_b.close()


async def test_a_register_with_a_spoofed_sender_is_refused(daemon: Daemon) -> None:
    paths = issue(daemon.certs, "honest-name", "agent")
    async with secure_channel(daemon.address, paths) as ch:
        out = Outbox()
        out.put(codec.new_envelope(pb.REGISTER, "someone-else", register=pb.Register(agent_type="echo")))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in pb_grpc.MeshStub(ch).Connect(out.iterate()):
                pass
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_submit_with_a_sender_that_is_not_the_certificate_is_denied(daemon: Daemon) -> None:
    client = MeshClient(daemon.address, paths_for(daemon.certs, "cli"), name="mallory")
    with pytest.raises(ClientError) as ei:
        async for _ in client.submit(Command("echo", Action.RUN, "x")):
            pass
    await client.close()
    assert ei.value.code == "PERMISSION_DENIED"


async def test_health_and_reflection_services(daemon: Daemon) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as ch:
        h = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="orchgpt.iac.v1.Mesh"), timeout=5
        )
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def req():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for r in stub.ServerReflectionInfo(req(), timeout=5):
            names = [s.name for s in r.list_services_response.service]
            break
    assert "orchgpt.iac.v1.Mesh" in names
    assert "grpc.health.v1.Health" in names


async def test_an_agent_certificate_cannot_submit_work(daemon: Daemon) -> None:
    paths = issue(daemon.certs, "sneaky-agent", "agent")
    client = MeshClient(daemon.address, paths)
    try:
        with pytest.raises(ClientError) as ei:
            async for _ in client.submit(Command("echo", Action.RUN, "x")):
                pass
        assert ei.value.code == "PERMISSION_DENIED" and "client role needed" in str(ei.value)
        assert await client.list_agents() == []  # reading the registry is allowed
    finally:
        await client.close()
