"""Token-delta latency across daemons (issue 19, docs/scaling.md): an echo agent on daemon A
streams N token deltas, ``token_gap`` apart, each one the wall-clock time it was sent
(``token_stamp``); a watcher gets them on A (one daemon: the baseline) and on B (across
daemons). The figure per token is its arrival time minus its stamp (one machine, one clock);
a coalesced event (a watcher behind) stands for each stamp it carries.

With ``--rate``: one task streams N deltas with no gap, watched on A and then on B; deltas per
second at the watcher and the CPU milliseconds per delta of each daemon (the sender A, the
receiver B; /proc, bench/procstat.py), the figure to compare on a shared machine.

Real daemons (``--cluster``) on one real PostgreSQL server (tests/support/postgres.py), a real
agentd, mutual TLS. Usage: ``python -m bench.cluster_tokens [N] [GAP_S]``; prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import cpu_seconds
from bench.stats import percentile
from orchgpt.models import Command, EventKind
from tests.support.mesh import AgentProc, Daemon, make_certs, start_agent
from tests.support.postgres import PostgresServer


@dataclass
class Mesh:
    """Daemons of one cluster, their agents, and the files they live in."""

    root: Path
    certs: Path
    url: str
    daemons: list[Daemon] = field(default_factory=list)
    agents: list[AgentProc] = field(default_factory=list)

    def add_daemon(self) -> Daemon:
        i = len(self.daemons)
        d = Daemon(
            workdir=self.root,
            certs=self.certs,
            data_dir=self.root / f"d{i}",
            args=["--no-spawn", "--cluster", "--store", self.url],
        ).start()
        self.daemons.append(d)
        return d

    def add_agent(self, d: Daemon, name: str, *also: Daemon) -> AgentProc:
        addrs = ",".join(x.address for x in (d, *also))
        p = start_agent(d, name, extra_args=["--orchestrator", addrs])
        self.agents.append(p)
        return p


@asynccontextmanager
async def cluster(daemons: int, fsync: bool = True) -> AsyncIterator[Mesh]:
    """``daemons`` daemons on a fresh PostgreSQL server (with fsync, as deployed, unless told)."""
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    pg = PostgresServer(fsync=fsync)
    pg.start()
    m = Mesh(root, make_certs(root / "certs"), "")
    try:
        m.url = pg.new_database("bench")
        for _ in range(daemons):
            m.add_daemon()
        yield m
    finally:
        for p in m.agents:
            p.stop()
        for d in m.daemons:
            d.kill()
        pg.stop()


async def agent_count(d: Daemon) -> int:
    async with d.client() as c:
        return len(await c.list_agents())


async def wait(pred: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition not met")
        await asyncio.sleep(0.05)


async def token_delays(d: Daemon, n: int, gap: float) -> list[float]:
    """Submit on ``d`` one echo task streaming ``n`` stamped tokens; each token's delay, ms."""
    out: list[float] = []
    opts = {"tokens": "1", "token_stamp": "1", "token_gap": f"{gap:g}"}
    async with d.client(timeout=120) as c:
        async for ev in c.submit(Command("echo", input=" ".join(["x"] * n), options=opts)):
            if ev.kind == EventKind.TOKEN:
                now = time.time()
                out.extend((now - float(s)) * 1000 for s in ev.text.split())
            elif ev.kind == EventKind.RESULT and (ev.result is None or not ev.result.ok):
                raise RuntimeError(f"bench: the token task failed: {ev.result}")
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
    }


async def main(n: int, gap: float, fsync: bool = True) -> dict[str, object]:
    async with cluster(2, fsync) as m:
        a, b = m.daemons
        m.add_agent(a, "echo-a")
        await wait(lambda: _listed(b))
        await token_delays(a, 20, gap)  # warm up
        await token_delays(b, 20, gap)
        same = await token_delays(a, n, gap)
        across = await token_delays(b, n, gap)
    return {
        "tokens": n,
        "gap_s": gap,
        "fsync": fsync,
        "one_daemon": summary(same),
        "across_daemons": summary(across),
        "added_p50_ms": round(percentile(across, 50) - percentile(same, 50), 2),
    }


async def rate(m: Mesh, d: Daemon, n: int) -> dict[str, float]:
    """One task streaming ``n`` deltas at once, watched on ``d``: deltas/s, TOKEN events at the
    watcher, and each daemon's CPU ms per delta."""
    pids = [x.proc.pid for x in m.daemons if x.proc is not None]
    cpu0 = [cpu_seconds(p) for p in pids]
    t0 = time.perf_counter()
    events = 0
    opts = {"tokens": "1", "token_stamp": "1"}
    async with d.client(timeout=120) as c:
        async for ev in c.submit(Command("echo", input=" ".join(["x"] * n), options=opts)):
            if ev.kind == EventKind.TOKEN:
                events += 1
    took = time.perf_counter() - t0
    cpu = [(cpu_seconds(p) - c0) * 1000 / n for p, c0 in zip(pids, cpu0, strict=True)]
    return {
        "per_s": round(n / took),
        "token_events": events,
        "cpu_ms_per_delta_a": round(cpu[0], 4),
        "cpu_ms_per_delta_b": round(cpu[1], 4),
    }


async def main_rate(n: int, rounds: int = 3) -> dict[str, object]:
    async with cluster(2) as m:
        a, b = m.daemons
        m.add_agent(a, "echo-a")
        await wait(lambda: _listed(b))
        await rate(m, b, 200)  # warm up
        same = [await rate(m, a, n) for _ in range(rounds)]
        across = [await rate(m, b, n) for _ in range(rounds)]
    return {"tokens": n, "load": os.getloadavg()[0], "one_daemon": same, "across_daemons": across}


async def _listed(d: Daemon) -> bool:
    return await agent_count(d) > 0


if __name__ == "__main__":
    args = sys.argv[1:]
    fsync = "--no-fsync" not in args
    args = [a for a in args if a != "--no-fsync"]
    if "--rate" in args:
        args = [a for a in args if a != "--rate"]
        print(json.dumps(asyncio.run(main_rate(int(args[0]) if args else 5000)), indent=2))
        sys.exit(0)
    result = asyncio.run(main(int(args[0]) if args else 500, float(args[1]) if len(args) > 1 else 0.01, fsync))
    print(json.dumps(result, indent=2))
