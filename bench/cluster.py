"""Cluster figures (issue 19, docs/scaling.md): an echo task's round trip (submit to RESULT)
with the agent on daemon A and the client on daemon B, against the same run with client
and agent on one daemon; plus the recovery time after a SIGKILL of the agent's daemon.

Real daemons on one real PostgreSQL server (tests/support/postgres.py), a real agentd,
mutual TLS. Sequential tasks (one in flight): the figure is the added latency, not the
throughput. Usage: ``python -m bench.cluster [N]``; prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import percentile
from orchgpt.models import Command, EventKind
from tests.support.mesh import Daemon, make_certs, start_agent
from tests.support.postgres import PostgresServer


async def round_trips(d: Daemon, n: int) -> list[float]:
    out: list[float] = []
    async with d.client(timeout=60) as c:
        for i in range(n):
            t0 = time.perf_counter()
            async for ev in c.submit(Command("echo", input=f"r{i}")):
                if ev.kind == EventKind.RESULT:
                    out.append((time.perf_counter() - t0) * 1000)
    return out


async def agents(d: Daemon) -> int:
    async with d.client() as c:
        return len(await c.list_agents())


async def wait(pred, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition not met")
        await asyncio.sleep(0.05)


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1)}


async def main(n: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    certs = make_certs(root / "certs")
    pg = PostgresServer()
    pg.start()
    made: list[Daemon] = []
    procs = []
    try:
        url = pg.new_database("bench")
        for i in range(2):
            made.append(
                Daemon(
                    workdir=root,
                    certs=certs,
                    data_dir=root / f"d{i}",
                    args=["--no-spawn", "--cluster", "--store", url],
                ).start()
            )
        a, b = made
        procs.append(start_agent(a, "echo-a", extra_args=["--orchestrator", f"{a.address},{b.address}"]))
        await wait(lambda: agents(b))
        await round_trips(a, 3)  # warm up
        same = await round_trips(a, n)
        across = await round_trips(b, n)
        # recovery: SIGKILL the agent's daemon, time until a task submitted on B succeeds
        t0 = time.perf_counter()
        a.stop(signal.SIGKILL)
        await round_trips(b, 1)
        recovery_ms = (time.perf_counter() - t0) * 1000
        return {
            "n": n,
            "one_daemon": summary(same),
            "across_daemons": summary(across),
            "added_p50_ms": round(percentile(across, 50) - percentile(same, 50), 1),
            "recovery_after_sigkill_ms": round(recovery_ms),
        }
    finally:
        for p in procs:
            p.stop()
        for d in made:
            d.kill()
        pg.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)), indent=2))
