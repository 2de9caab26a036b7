"""A real daemon and real agentd processes: after a burst of registrations the early agents are
told the longer interval (Ping.heartbeat_interval_ms), adopt it, and the daemon's PINGs at idle
stay few: agentd watches the daemon itself (docs/protocol.md §5), so the daemon pings it only to
announce an interval, never at the short intervals the early agents got."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import AgentProc, start_agent, wait_for
from tests.test_metrics import metrics_daemon, samples, scrape, value

pytestmark = pytest.mark.timeout(90)

N = 5  # with one agent per interval of 0.5 s (the test daemon's): 0.5, 1.0, ... 2.5 s at registration


def _adopted(a: AgentProc) -> list[float]:
    """The intervals the agent adopted, from its log (JSON lines)."""
    out = []
    for line in a.log().splitlines():
        if '"heartbeat_interval"' in line:
            with contextlib.suppress(ValueError):
                out.append(float(json.loads(line)["seconds"]))
    return out


def _pings(port: int) -> float:
    return value(samples(scrape(port)[1]), "orchgpt_envelopes_out_total", type="PING") or 0.0


def test_after_a_burst_the_early_agents_adopt_the_longer_interval_and_pings_stay_few(
    daemon_factory: Any, tmp_path: Path, agents: list[AgentProc]
) -> None:
    d, port = metrics_daemon(daemon_factory, tmp_path, env={"ORCHGPT_HEARTBEAT_AGENTS_PER_INTERVAL": "1"})
    for i in range(N):
        agents.append(start_agent(d, f"hb{i}"))
    wait_for(lambda: all("registered" in a.log() for a in agents), 40, what="the agents to register")
    # the two that registered first (0.5 and 1.0 s) are at least RESCALE short of the 2.5 s now
    # wanted: each is told a longer interval and says so in its log
    wait_for(lambda: sum(bool(_adopted(a)) for a in agents) >= 2, 20, what="the early agents to adopt an interval")
    assert all(s >= 1.0 for a in agents for s in _adopted(a))
    time.sleep(3.0)  # the last announcements land (one ping interval of the longest)
    p0, t0 = _pings(port), time.monotonic()
    time.sleep(6.0)
    rate = (_pings(port) - p0) / (time.monotonic() - t0)
    # intervals fixed at registration: 1/0.5 + 1/1 + 1/1.5 + 1/2 + 1/2.5 = 4.6 PINGs/s;
    # re-announced: every agent at 1.25 s or more, about 2.4/s
    assert rate < 3.5, rate
    assert all(a.proc.poll() is None for a in agents)  # nobody was dropped as silent on the way
    assert "no heartbeat" not in d.log()
