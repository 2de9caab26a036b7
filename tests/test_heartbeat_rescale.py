"""Heartbeat intervals re-announced as the number of agents changes (orchgpt/heartbeats.py), the
rule that keeps agents which ignore the announcement safe, and the timer wheel of the sweep."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from orchgpt import heartbeats
from orchgpt.mesh import Mesh, Registration
from orchgpt.store import MemoryStore
from tests.support.fake_ports import FakeLink

pytestmark = pytest.mark.timeout(60)


def _mesh(n: int, per: int, base: float = 1.0) -> tuple[Mesh, dict[str, FakeLink], float]:
    m = Mesh(MemoryStore(), builtin_types=("echo",), heartbeat_interval=base, heartbeat_misses=3)
    m.agents_per_interval = per
    links: dict[str, FakeLink] = {}
    t0 = time.monotonic()
    for i in range(n):  # a burst: all at once
        links[f"a{i}"] = FakeLink()
        m.register(f"a{i}", Registration("echo"), links[f"a{i}"])
    return m, links, t0


# ---- the wheel


def test_the_wheel_gives_an_item_at_the_sweep_nearest_its_time_and_only_then() -> None:
    w: heartbeats.Wheel[str] = heartbeats.Wheel(1.0)
    w.add("a", 10.2)
    w.add("b", 10.6)
    w.add("c", 30.0)
    assert w.due(9.0) == []
    assert w.due(10.0) == ["a"]  # due by 10.5: a, not b
    assert w.due(10.05) == []  # taken once
    assert w.due(10.2) == ["b"]
    assert len(w) == 1 and w.due(29.4) == [] and w.due(29.6) == ["c"] and len(w) == 0


def test_the_wheel_never_files_an_item_for_a_sweep_already_run() -> None:
    w: heartbeats.Wheel[str] = heartbeats.Wheel(1.0)
    assert w.due(100.0) == []
    w.add("late", 50.0)  # its moment is past: the next sweep takes it
    assert w.due(100.2) == ["late"] and w.due(101.0) == []


def test_a_sweep_costs_what_is_due_not_what_is_held() -> None:
    w: heartbeats.Wheel[int] = heartbeats.Wheel(1.0)
    for i in range(10_000):
        w.add(i, 1000.0 + i % 100)
    assert len(w.due(1000.0)) == 100 and len(w) == 9_900
    assert len(w.due(1049.0)) == 4_900 and len(w) == 5_000  # 1001 .. 1049


# ---- the rule for agents that ignore an announcement


@dataclass
class _Beat:
    interval: float
    offered: float = 0.0
    grace: float = 0.0
    grace_until: float = 0.0


def test_an_announcement_is_made_when_the_wanted_interval_doubles_or_halves() -> None:
    b = _Beat(5.0)
    assert heartbeats.offer(b, 9.0, 0.0, 3) == 0.0  # less than twice: kept
    assert heartbeats.offer(b, 10.0, 0.0, 3) == 10.0 and b.offered == 10.0
    assert heartbeats.offer(b, 10.0, 1.0, 3) == 10.0  # repeated until acknowledged
    assert heartbeats.acknowledged(b, 10.0, 2.0, 3) and (b.interval, b.offered) == (10.0, 0.0)
    assert heartbeats.offer(b, 5.0, 3.0, 3) == 5.0  # halved


def test_an_agent_that_ignores_the_announcement_is_judged_by_its_own_interval_and_pinged_by_it() -> None:
    b = _Beat(5.0)
    heartbeats.offer(b, 20.0, 0.0, 3)
    assert heartbeats.cadence(b) == 5.0  # its watchdog expects us every 5 s: still pinged so
    assert heartbeats.silence_limit(b, 0.0, 3) == 60.0  # it might have adopted 20 s: never dropped early
    b = _Beat(20.0)
    heartbeats.offer(b, 5.0, 0.0, 3)
    assert heartbeats.cadence(b) == 5.0  # pinged at the shorter one
    assert heartbeats.silence_limit(b, 0.0, 3) == 60.0  # it may still beat every 20 s


def test_acknowledging_a_shorter_interval_keeps_the_longer_one_as_grace() -> None:
    b = _Beat(20.0)
    heartbeats.offer(b, 5.0, 0.0, 3)
    assert not heartbeats.acknowledged(b, 1.0, 1.0, 3)  # not what was offered: ignored
    assert heartbeats.acknowledged(b, 5.0, 1.0, 3) and b.interval == 5.0
    assert heartbeats.silence_limit(b, 2.0, 3) == 60.0  # mid-sleep of 20 s when it adopted 5 s
    assert heartbeats.silence_limit(b, 62.0, 3) == 15.0  # later: its own


def test_a_replaced_offer_keeps_its_length_as_grace() -> None:
    b = _Beat(5.0)
    heartbeats.offer(b, 40.0, 0.0, 3)  # it may adopt 40 s ...
    assert heartbeats.offer(b, 5.0, 1.0, 3) == 5.0  # ... the agents left: back to 5 s, said again
    assert heartbeats.silence_limit(b, 2.0, 3) == 120.0
    assert heartbeats.acknowledged(b, 5.0, 3.0, 3) and b.offered == 0.0


# ---- the mesh


def test_after_a_burst_the_early_agents_are_told_the_longer_interval() -> None:
    m, links, t0 = _mesh(16, per=2)
    assert m.heartbeat_for("a0") == 1.0 and m.heartbeat_for("a15") == 8.0
    m.heartbeat_tick(t0 + 1.0)
    assert links["a0"].announced == [8.0] and links["a1"].announced == [8.0]
    assert links["a15"].announced == [] and links["a15"].pings == 0  # not due, and its interval fits
    m.interval_acknowledged("a0", 8.0)
    assert m.heartbeat_for("a0") == 8.0 and m.heartbeat_for("a1") == 1.0  # a1 did not acknowledge
    for e in m.agents.values():
        e.last_seen = t0 + 5.0
    for s in range(2, 7):  # a1 keeps its PINGs every second (its watchdog), a0 now every 8 s
        m.heartbeat_tick(t0 + s)
    assert links["a1"].pings == 6 and links["a0"].pings == 1
    assert "a1" in m.agents and not links["a1"].closed


def test_the_ping_rate_after_a_burst_is_about_agents_per_interval() -> None:
    """2,000 agents at once, 100 per interval of 1 s: the intended 100 PINGs/s, not the
    100 + 100 ln(20) = 400/s of intervals fixed at registration."""
    m, links, t0 = _mesh(2000, per=100)
    told: dict[str, int] = dict.fromkeys(links, 0)
    counts = []
    for s in range(1, 121):
        now = t0 + s
        before = sum(lk.pings for lk in links.values())
        m.heartbeat_tick(now)
        counts.append(sum(lk.pings for lk in links.values()) - before)
        for a, lk in links.items():  # the agents heartbeat, and acknowledge what they are told
            m.agents[a].last_seen = now
            if len(lk.announced) > told[a]:
                told[a] = len(lk.announced)
                m.interval_acknowledged(a, lk.announced[-1])
    assert len(m.agents) == 2000
    rate = sum(counts[-60:]) / 60
    assert 90 <= rate <= 150, rate
