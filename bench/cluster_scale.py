"""One to three daemons on one PostgreSQL (issue 19, docs/scaling.md "Measured").

For each size: the same agents (``AGENTS`` echo agents) and the same clients (``CLIENTS``
concurrent submitters). One daemon: agents and clients on it (the baseline). Two or three:
the clients on daemon 0, the agents spread over the others, so that every task is offered,
claimed and run on another daemon and its events cross back. Figures:

- routed round trips per second (sequential echo tasks per client, ``SECONDS`` long) and
  their p50;
- token deltas per second reaching the clients (each client a task streaming ``TOKENS``
  deltas; a coalesced event counts for the deltas it stands for);
- recovery after SIGKILL (two or more daemons): daemon 1 (agents on it, with every daemon's
  address) is killed while the clients run; the time until its agents are connected to a
  live daemon again, and until a task submitted then succeeds.

Each row carries the one-daemon figure and the ratio to it. Real daemons, real agentd,
real PostgreSQL (fsync on). Usage: ``python -m bench.cluster_scale [SECONDS]``; prints a
Markdown table, then JSON.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from bench.cluster_tokens import Mesh, cluster, wait
from bench.stats import percentile
from orchgpt.models import Command, EventKind
from tests.support.mesh import Daemon

AGENTS = 4
CLIENTS = 8
TOKENS = 2000


async def _echo(d: Daemon, text: str) -> None:
    async with d.client(timeout=60) as c:
        async for ev in c.submit(Command("echo", input=text)):
            if ev.kind == EventKind.RESULT and (ev.result is None or not ev.result.ok):
                raise RuntimeError(f"bench: echo failed: {ev.result}")


async def round_trips(d: Daemon, seconds: float) -> dict[str, float]:
    """CLIENTS clients each submitting echo tasks one after the other for ``seconds``."""
    lat: list[float] = []
    end = time.monotonic() + seconds

    async def client(i: int) -> None:
        n = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await _echo(d, f"c{i}-{n}")
            lat.append((time.perf_counter() - t0) * 1000)
            n += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    took = time.perf_counter() - t0
    return {"per_s": round(len(lat) / took, 1), "p50_ms": round(percentile(lat, 50), 1)}


async def tokens(d: Daemon) -> dict[str, float]:
    """AGENTS tasks at once, each streaming TOKENS deltas: deltas per second at the clients."""
    got = 0

    async def one(i: int) -> None:
        nonlocal got
        opts = {"tokens": "1"}
        async with d.client(timeout=120) as c:
            async for ev in c.submit(Command("echo", input=" ".join(["t"] * TOKENS), options=opts)):
                if ev.kind == EventKind.TOKEN:
                    got += ev.seq - int(ev.data.get("seq_from", ev.seq)) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(AGENTS)))
    took = time.perf_counter() - t0
    return {"per_s": round(got / took), "deltas": got}


async def _placed(d: Daemon, dead: str = "") -> bool:
    """Every agent listed on ``d`` as connected to a live daemon (not to ``dead``)."""
    async with d.client() as c:
        agents = await c.list_agents()
    ok = {a.agent_id for a in agents if a.state != "lost" and not (dead and f"daemon {dead}" in a.host)}
    return len(ok) >= AGENTS


async def recovery(m: Mesh) -> dict[str, float]:
    """SIGKILL daemon 1 while the clients run: until its agents are placed again, and until
    a task submitted then succeeds."""
    front, victim = m.daemons[0], m.daemons[1]
    load = asyncio.create_task(round_trips(front, 4))
    await asyncio.sleep(1)
    t0 = time.perf_counter()
    victim.stop(signal.SIGKILL)
    await wait(lambda: _placed(front, victim.address), timeout=60)
    placed = time.perf_counter() - t0
    await _echo(front, "after the kill")
    served = time.perf_counter() - t0
    await load
    return {"agents_back_ms": round(placed * 1000), "task_ok_ms": round(served * 1000)}


async def one_size(n: int, seconds: float) -> dict[str, Any]:
    async with cluster(n) as m:
        homes = m.daemons[1:] or m.daemons
        for i in range(AGENTS):
            home = homes[i % len(homes)]
            m.add_agent(home, f"echo-{i}", *[d for d in m.daemons if d is not home])
        await wait(lambda: _placed(m.daemons[0]), timeout=60)
        await round_trips(m.daemons[0], 1)  # warm up
        out: dict[str, Any] = {"daemons": n, "load_before": _load()}
        out["round_trips"] = await round_trips(m.daemons[0], seconds)
        out["tokens"] = await tokens(m.daemons[0])
        if n > 1:
            out["recovery"] = await recovery(m)
        out["load_after"] = _load()
        return out


def _load() -> float:
    """The machine's 1-minute load average (other work on it moves every figure)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(sizes: list[dict[str, Any]]) -> str:
    base = sizes[0]
    rows = [
        "| figure | " + " | ".join(f"{s['daemons']} daemon{'s' if s['daemons'] > 1 else ''}" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]

    def line(name: str, get: Any, unit: str, ratio: bool = True) -> None:
        cells = []
        for s in sizes:
            v = get(s)
            if v is None:
                cells.append("-")
            elif s is base or not ratio:
                cells.append(f"{v:g} {unit}")
            else:
                cells.append(f"{v:g} {unit} ({_ratio(v, get(base))})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")

    line("routed round trips", lambda s: s["round_trips"]["per_s"], "/s")
    line("round trip p50", lambda s: s["round_trips"]["p50_ms"], "ms")
    line("token deltas", lambda s: s["tokens"]["per_s"], "/s")
    line("SIGKILL: agents placed again", lambda s: s.get("recovery", {}).get("agents_back_ms"), "ms", False)
    line("SIGKILL: a task succeeds", lambda s: s.get("recovery", {}).get("task_ok_ms"), "ms", False)
    line("load average (before)", lambda s: s["load_before"], "", False)
    return "\n".join(rows)


async def main(seconds: float) -> list[dict[str, Any]]:
    return [await one_size(n, seconds) for n in (1, 2, 3)]


if __name__ == "__main__":
    results = asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 8))
    print(table(results))
    print(json.dumps(results, indent=2))
