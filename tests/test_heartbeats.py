"""Heartbeats that cost little: intervals announced in REGISTERED grow with the number of
agents, the daemon's one sweep pings an agent only when its own interval has passed and only
when nothing else was sent to it, and an agent is judged by its own interval."""

from __future__ import annotations

import time

import pytest

from orchgpt import heartbeats
from orchgpt.mesh import Mesh, Registration
from orchgpt.servicer_link import GrpcAgentLink
from orchgpt.store import MemoryStore
from orchgpt.wire.batching import Outbox
from tests.support.fake_ports import FakeLink

pytestmark = pytest.mark.timeout(60)

PER = heartbeats.AGENTS_PER_INTERVAL


def _mesh(n: int) -> tuple[Mesh, dict[str, FakeLink]]:
    m = Mesh(MemoryStore(), builtin_types=("echo",), heartbeat_interval=1.0, heartbeat_misses=3)
    links = {}
    for i in range(n):
        links[f"a{i}"] = FakeLink()
        m.register(f"a{i}", Registration("echo"), links[f"a{i}"])
    return m, links


def test_the_interval_announced_grows_with_the_number_of_agents() -> None:
    m, _ = _mesh(3 * PER)
    assert m.heartbeat_for("a0") == 1.0  # the configured interval while there are few agents
    assert m.heartbeat_for(f"a{PER - 1}") == 1.0
    assert m.heartbeat_for(f"a{2 * PER - 1}") == pytest.approx(2.0)
    assert m.heartbeat_for(f"a{3 * PER - 1}") == pytest.approx(3.0)
    assert m.heartbeat_for("gone") == 1.0


def test_the_sweep_pings_only_the_agents_whose_interval_has_passed() -> None:
    m, links = _mesh(2 * PER)
    t0 = time.monotonic()  # as if all had registered now: 1,000 registrations take a while on a busy machine
    m.hb_wheel = heartbeats.Wheel(1.0)
    for e in m.agents.values():
        e.pinged = e.last_seen = t0
        m.hb_wheel.add(e, t0 + e.interval)
    m.heartbeat_tick(t0)  # just registered: nobody is due yet
    assert sum(lk.pings for lk in links.values()) == 0
    now = t0 + 1.2  # one configured interval later
    for e in m.agents.values():
        e.last_seen = now
    m.heartbeat_tick(now)
    slow = [a for a in links if m.heartbeat_for(a) > 1.75]  # due at the sweep nearest 1.7 s
    assert slow and all(links[a].pings == 0 for a in slow)  # their interval has not passed
    assert all(links[a].pings == 1 for a in links if m.heartbeat_for(a) <= 1.65)


def test_an_agent_is_judged_by_its_own_interval() -> None:
    m, links = _mesh(2 * PER)
    last = f"a{2 * PER - 1}"  # interval 2 s: lost after 6 s of silence, not 3
    now = time.monotonic()
    m.agents[last].last_seen = now - 4.0
    m.agents["a0"].last_seen = now - 4.0  # interval 1 s: lost
    m.heartbeat_tick(now + 1.2)  # 5.2 s of silence
    assert last in m.agents and not links[last].closed
    assert "a0" not in m.agents and "no heartbeat" in links["a0"].closed


def test_a_link_that_just_sent_something_skips_the_ping() -> None:
    outbox = Outbox()
    link = GrpcAgentLink("a1", outbox)
    link.send_ping()
    assert len(outbox) == 1  # idle: a PING
    link.send_cancel("t1", "x")  # traffic: it counts as life for the agent's watchdog
    link.send_ping()
    assert len(outbox) == 2
    link.send_ping()  # nothing since: a PING again
    assert len(outbox) == 3 and outbox._items[-1].HasField("ping")


async def test_agentd_skips_its_heartbeat_while_it_sends_other_traffic() -> None:
    import asyncio

    from agentd.link import Link
    from orchgpt.iac.v1 import iac_pb2 as pb

    link = Link.__new__(Link)  # only what _heartbeat reads: no connection
    link.name, link.heartbeat_s, link.running = "a1", 0.05, {}
    link.connected = asyncio.Event()
    link.connected.set()
    link.last_rx = time.monotonic() + 3600  # the watchdog stays quiet
    outbox = Outbox()
    hb = asyncio.create_task(link._heartbeat(outbox, None))
    try:
        for _ in range(20):  # 0.4 s of traffic, several intervals
            outbox.put(pb.Envelope(type=pb.TASK_EVENT))
            await asyncio.sleep(0.02)
        kinds = [e.type for e in outbox._items]
        assert pb.HEARTBEAT not in kinds  # the traffic counts as life
        outbox._items.clear()
        for _ in range(500):  # silence: heartbeats again (waited for, at most 5 s)
            if [e.type for e in outbox._items].count(pb.HEARTBEAT) >= 2:
                break
            await asyncio.sleep(0.01)
        assert [e.type for e in outbox._items].count(pb.HEARTBEAT) >= 2
    finally:
        hb.cancel()
