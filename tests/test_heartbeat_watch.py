"""Heartbeats in one direction (docs/protocol.md §5): an agent that states its interval in its
HEARTBEATs watches the daemon with PINGs of its own, so the daemon sends it no routine PINGs
(only announcements of a new interval, acknowledged by the next HEARTBEAT: no PING/PONG pair);
a silent agent is still dropped, and a daemon whose event loop no longer answers is still
noticed by the agent, which reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentd.link import Link
from agentd.runtime import Agent
from orchgpt import codec
from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.mesh import Mesh, Registration
from orchgpt.store import MemoryStore
from orchgpt.tls import server_credentials
from orchgpt.wire.batching import Outbox
from tests.support.fake_ports import FakeLink
from tests.support.mesh import AgentProc, await_for, issue, start_agent, wait_for
from tests.test_metrics import metrics_daemon, samples, scrape, value

pytestmark = pytest.mark.timeout(90)


def _mesh(n: int, per: int = 500) -> tuple[Mesh, dict[str, FakeLink], float]:
    m = Mesh(MemoryStore(), builtin_types=("echo",), heartbeat_interval=1.0, heartbeat_misses=3)
    m.agents_per_interval = per
    links: dict[str, FakeLink] = {}
    t0 = time.monotonic()
    for i in range(n):
        links[f"a{i}"] = FakeLink()
        m.register(f"a{i}", Registration("echo"), links[f"a{i}"])
    return m, links, t0


# ---- the daemon's side


def test_an_agent_that_watches_the_daemon_is_not_pinged_an_older_one_is() -> None:
    m, links, t0 = _mesh(2)
    m.interval_acknowledged("a0", 1.0, watches=True)  # its HEARTBEAT said "every 1 s"
    for s in range(1, 11):
        for e in m.agents.values():
            e.last_seen = t0 + s  # both heartbeat every second
        m.heartbeat_tick(t0 + s)
    assert links["a0"].pings == 0  # one message an interval: its HEARTBEAT
    assert links["a1"].pings >= 9  # the older agent's watchdog still needs ours
    assert "a0" in m.agents and "a1" in m.agents


def test_a_watching_agent_is_still_told_a_new_interval_and_its_heartbeat_acknowledges_it() -> None:
    m, links, t0 = _mesh(16, per=2)  # a0 registered at 1 s, 16 agents now want 8 s
    m.interval_acknowledged("a0", 1.0, watches=True)
    m.heartbeat_tick(t0 + 1.0)
    assert links["a0"].announced == [8.0]
    m.interval_acknowledged("a0", 8.0, watches=True)  # its next HEARTBEAT, on the new interval
    assert m.heartbeat_for("a0") == 8.0
    for s in range(2, 20):
        m.agents["a0"].last_seen = t0 + s
        m.heartbeat_tick(t0 + s)
    assert links["a0"].pings == 1  # the announcement only


def test_a_silent_watching_agent_is_still_dropped_after_its_misses() -> None:
    m, links, t0 = _mesh(1)
    m.interval_acknowledged("a0", 1.0, watches=True)
    m.agents["a0"].last_seen = t0
    m.heartbeat_tick(t0 + 2.5)
    assert "a0" in m.agents  # 2.5 s of silence: within 3 x 1 s
    m.heartbeat_tick(t0 + 4.0)
    assert "a0" not in m.agents and "no heartbeat" in links["a0"].closed


# ---- agentd's side


class _Call:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def test_agentd_heartbeats_state_its_interval_then_a_silent_daemon_is_asked_then_given_up() -> None:
    link = Link.__new__(Link)  # only what the heartbeat loop reads: no connection
    link.name, link.heartbeat_s, link.running = "a1", 0.05, {}
    link.connected = asyncio.Event()
    link.connected.set()
    link.last_rx = time.monotonic()  # REGISTERED just came; then nothing more from the daemon
    outbox, call = Outbox(), _Call()
    hb = asyncio.create_task(link._heartbeat(outbox, call))
    try:
        await asyncio.wait_for(hb, 10)  # it returns once it gives the stream up
    finally:
        hb.cancel()
    sent = list(outbox._items)
    assert sent[0].type == pb.HEARTBEAT and sent[0].heartbeat.heartbeat_interval_ms == 50
    assert pb.PING in [e.type for e in sent]  # after 1.5 intervals of silence: "are you there?"
    assert call.cancelled  # after 3: reconnect


class _Quiet(Agent):
    type = "quiet"
    capabilities = ("quiet",)
    needs_model = False


class _HungDaemon:
    """A Connect server that answers REGISTER and then, like a daemon whose event loop is stuck
    while gRPC's own thread still answers keepalives, sends nothing more (``answer_pings``: it
    answers the agent's PINGs and nothing else)."""

    def __init__(self, certs: Path, answer_pings: bool) -> None:
        self.certs, self.answer_pings = certs, answer_pings
        self.connects = 0
        self.pings = 0

    async def connect(self, requests: AsyncIterator[pb.Batch], context: grpc.aio.ServicerContext) -> Any:
        self.connects += 1
        async for batch in requests:
            for env in batch.envelopes:
                if env.type == pb.REGISTER:
                    reg = pb.Registered(agent_id=env.sender, heartbeat_interval_ms=100, agent_pings=True)
                    yield pb.Batch(envelopes=[codec.new_envelope(pb.REGISTERED, "orchgpt", registered=reg)])
                elif env.type == pb.PING:
                    self.pings += 1
                    if self.answer_pings:
                        pong = codec.new_envelope(pb.PONG, "orchgpt", correlation_id=env.id)
                        yield pb.Batch(envelopes=[pong])

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self.connect, request_deserializer=pb.Batch.FromString, response_serializer=pb.Batch.SerializeToString
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("orchgpt.iac.v1.Mesh", {"Connect": handler}),)
        )
        port = server.add_secure_port("127.0.0.1:0", server_credentials(paths_for(self.certs, "server")))
        await server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)


@asynccontextmanager
async def _agent(certs: Path, address: str, tmp_path: Path) -> AsyncIterator[Link]:
    issue(certs, "quiet1", "agent")
    link = Link(_Quiet(), "quiet1", address, paths_for(certs, "quiet1"), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        await link.stop(grace=1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_daemon_that_answers_only_pings_keeps_the_agent(certs: Path, tmp_path: Path) -> None:
    fake = _HungDaemon(certs, answer_pings=True)
    async with fake.serving() as address, _agent(certs, address, tmp_path):
        await await_for(lambda: fake.pings >= 6, 30, what="six PINGs of the agent's watch")  # 12+ intervals
        assert fake.connects == 1  # each PONG fed its watch: never given up


async def test_a_daemon_whose_loop_hangs_is_noticed_and_the_agent_reconnects(certs: Path, tmp_path: Path) -> None:
    fake = _HungDaemon(certs, answer_pings=False)
    async with fake.serving() as address, _agent(certs, address, tmp_path):
        await await_for(lambda: fake.connects >= 2, 30, what="the agent to give the silent stream up")
        assert fake.pings >= 1  # it asked before it gave up


# ---- a real daemon and a real agentd


def _count(port: int, name: str, type_: str) -> float:
    return value(samples(scrape(port)[1]), name, type=type_) or 0.0


def test_an_idle_agentd_sends_one_message_an_interval_and_the_daemon_pings_it_not(
    daemon_factory: Any, tmp_path: Path, agents: list[AgentProc]
) -> None:
    d, port = metrics_daemon(daemon_factory, tmp_path, env={"ORCHGPT_HEARTBEAT_INTERVAL": "0.3"})
    agents.append(start_agent(d, "idle1"))
    wait_for(lambda: _count(port, "orchgpt_envelopes_in_total", "HEARTBEAT") >= 1, 30, what="a first HEARTBEAT")
    time.sleep(0.4)  # a sweep that was due as the first HEARTBEAT came may still ping
    out0 = _count(port, "orchgpt_envelopes_out_total", "PING")
    hb0, ping0 = (_count(port, "orchgpt_envelopes_in_total", t) for t in ("HEARTBEAT", "PING"))
    pong0 = _count(port, "orchgpt_envelopes_out_total", "PONG")
    wait_for(
        lambda: _count(port, "orchgpt_envelopes_in_total", "PING") - ping0 >= 4, 40, what="four PINGs of its watch"
    )
    hb, ping = (_count(port, "orchgpt_envelopes_in_total", t) - v for t, v in (("HEARTBEAT", hb0), ("PING", ping0)))
    assert _count(port, "orchgpt_envelopes_out_total", "PING") == out0  # none from the daemon at idle
    assert _count(port, "orchgpt_envelopes_out_total", "PONG") - pong0 >= 4  # its PINGs answered
    assert hb >= ping - 1  # every other tick a HEARTBEAT, in between a PING
    assert agents[0].proc.poll() is None
    assert "orchestrator_silent" not in agents[0].log() and "no heartbeat" not in d.log()
