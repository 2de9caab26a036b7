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

import grpc
import pytest

from tests.support import conformance_world
from tests.support.conformance_world import SERVER_NAME, TYPE_RE_EXAMPLES, _uid

pytestmark = pytest.mark.timeout(60)

# The shared fixtures (pytest finds a fixture by its name in the test's module).
stubs, mesh, world = conformance_world.stubs, conformance_world.mesh, conformance_world.world


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
    async with grpc.aio.secure_channel(
        d.address, creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    ) as ch:
        call = ch.stream_stream(
            "/orchgpt.iac.v1.Mesh/Connect",
            request_serializer=pb.Batch.SerializeToString,
            response_deserializer=pb.Batch.FromString,
        )
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
