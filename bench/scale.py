"""Scale: N idle agents connected with heartbeats, each with its own certificate and TLS
connection, multiplexed in a few client processes (not one process per agent).

For each step N (100, 1,000, ... towards 10,000 while the time budget lasts):
time to register the new agents, the router's RSS (VmRSS) and RSS per agent
above the empty router, and its CPU at idle over one heartbeat interval.
Run against the baseline relay (same TLS, same heartbeats) and orchgpt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import placement
from .children import Child, Children
from .errors import BenchError
from .procstat import cpu_seconds, rss_bytes
from .routing import Router

MIB = 1024 * 1024
MUST_REACH = 1000  # steps up to this one always run; beyond it, as far as the budget holds


async def _step(idlers: list[Child], add: int, timeout: float) -> float:
    """Register ``add`` more agents spread over the idler processes; returns seconds."""
    share = [add // len(idlers) + (1 if i < add % len(idlers) else 0) for i in range(len(idlers))]
    busy = [(c, k) for c, k in zip(idlers, share, strict=True) if k]
    for c, k in busy:
        await c.send(cmd="prepare", count=k)
    for c, _ in busy:
        await c.expect("prepared", timeout)
    t0 = time.perf_counter()
    for c, _ in busy:
        await c.send(cmd="go")
    for c, _ in busy:
        await c.expect("registered", timeout)
    return time.perf_counter() - t0


async def run_scale(
    log_dir: Path,
    start_router: Callable[[Children], Awaitable[Router]],
    steps: list[int],
    processes: int,
    budget_s: float,
    idle_window_s: float,
    pem_dir: Path,
    adaptive: bool = True,
) -> dict[str, Any]:
    """One router: grow through ``steps`` (all of them up to MUST_REACH, then each next one
    while the rest of ``budget_s`` can hold it; every one when not ``adaptive``); never
    raises for a step that fails (it is recorded and the growth stops)."""
    out: dict[str, Any] = {"steps": [], "error": None}
    t_start = time.monotonic()
    async with Children(log_dir) as children:
        router = await start_router(children)
        out["mode"] = router.mode
        await asyncio.sleep(1.0)
        rss0 = rss_bytes(router.pid)
        out["rss_empty_mib"] = rss0 / MIB
        idlers = []
        for i in range(processes):
            c = await children.python(
                f"{router.mode}-idlers-{i}",
                "bench.peer",
                [
                    "idlers",
                    "--mode",
                    router.mode,
                    "--target",
                    router.target,
                    "--certs",
                    str(router.certs),
                    "--prefix",
                    f"idle{i}-",
                    "--pem-dir",
                    str(pem_dir / router.mode / str(i)),
                    "--cap",
                    str(budget_s + 300),
                ],
                cpus=placement.PEER_CPUS,
            )
            idlers.append(c)
        for c in idlers:
            await c.expect("ready", 60)
        current = 0
        reg_total = 0.0
        rate = 0.0  # registrations per second of the last step
        pending = sorted(steps)
        while pending:
            n = pending.pop(0)
            if current >= n:
                continue
            if adaptive and out["steps"] and n > MUST_REACH:
                # go on only while the rest of the budget can hold the next step
                left = budget_s - (time.monotonic() - t_start)
                need = (n - current) / rate * 1.3 + idle_window_s + 10 if rate else float("inf")
                if need > left:
                    out["stopped"] = f"time budget: N={n} would need ~{need:.0f}s more, {max(left, 0):.0f}s left"
                    break
            add = n - current
            try:
                rc0 = cpu_seconds(router.pid)
                secs = await _step(idlers, add, timeout=max(60.0, add * 0.05))
                reg_cpu = cpu_seconds(router.pid) - rc0
            except BenchError as exc:
                out["error"] = f"N={n}: {exc}"
                break
            current = n
            reg_total += secs
            rate = add / secs if secs else 0.0
            await asyncio.sleep(1.0)  # let the registrations settle (logs, store writes)
            rss = rss_bytes(router.pid)
            c0 = cpu_seconds(router.pid)
            await asyncio.sleep(idle_window_s)
            c1 = cpu_seconds(router.pid)
            out["steps"].append(
                {
                    "agents": n,
                    "register_s": secs,
                    "register_total_s": reg_total,
                    "registrations_per_s": add / secs if secs else None,
                    "register_router_cpu_pct": reg_cpu / secs * 100 if secs else None,
                    "rss_mib": rss / MIB,
                    "rss_per_agent_kib": (rss - rss0) / n / 1024,
                    "idle_cpu_pct": (c1 - c0) / idle_window_s * 100,
                }
            )
    out["seconds"] = time.monotonic() - t_start
    return out
