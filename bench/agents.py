"""Many idle agents on one daemon: 10,000, then 20,000 (a separate script: it takes minutes).

    python -m bench.agents                          # orchgpt then the relay: 10,000 then 20,000
    python -m bench.agents --steps 10000 --modes orchgpt --idle-window 30
    python -m bench.agents --steps 20 --procs 2 --idle-window 1 --out ''   # a smoke run

Each agent has its own certificate and its own TLS connection, multiplexed in ``--procs`` client
processes (bench.peer idlers) pinned to the peer CPU; the router (orchgpt daemon or the bare
relay, same TLS, same heartbeats: 5 s for the relay, orchgpt's announced intervals) is pinned
to the other. Each step registers all of its new agents at once (``--concurrency`` at a time in
each process) and reports:

- the time from the first connect to the last REGISTERED (target: 10,000 within 60 s);
- the router's RSS and RSS per agent above the empty router, against the relay's;
- the router's CPU at idle, as % of one core, over ``--idle-window`` seconds (orchgpt's
  intervals grow with the number of agents, up to 100 s at 10,000: the window averages the sweeps).

While agents register, a monitor samples the router every second (open descriptors, RSS, CPU
% of a core) and the clients' CPU, so that when a step fails the JSON says what gave first: the
descriptor limit, memory, the router's single event loop (near 100 % of its core), or the
clients. The descriptor limit is raised first (soft and hard, as root: ``--nofile``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import daemon, msgrate, placement, routing, tlsdir
from bench.children import Child, Children
from bench.errors import BenchError
from bench.machine import machine_info
from bench.procstat import cpu_seconds, rss_bytes
from bench.scale import _step

MIB = 1024 * 1024


def raise_nofile(want: int) -> tuple[int, int]:
    """Soft and hard RLIMIT_NOFILE up to ``want`` (the hard one only as root); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def _mem_available_mib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return -1.0


class Monitor:
    """Samples the router (and the clients' CPU) every second while it runs."""

    def __init__(self, router_pid: int, clients: list[int]) -> None:
        self.router, self.clients = router_pid, clients
        self.samples: list[dict[str, float]] = []
        self.t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = (time.monotonic(), cpu_seconds(self.router), sum(cpu_seconds(c) for c in self.clients))
        while True:
            await asyncio.sleep(1.0)
            now = (time.monotonic(), cpu_seconds(self.router), sum(cpu_seconds(c) for c in self.clients))
            dt = now[0] - last[0]
            self.samples.append(
                {
                    "t": round(now[0] - self.t0, 1),
                    "router_cpu_pct": (now[1] - last[1]) / dt * 100,
                    "clients_cpu_pct": (now[2] - last[2]) / dt * 100,
                    "router_fds": _fds(self.router),
                    "router_rss_mib": rss_bytes(self.router) / MIB,
                    "mem_available_mib": _mem_available_mib(),
                }
            )
            last = now

    def __enter__(self) -> Monitor:
        self.t0 = time.monotonic()
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        keys = [k for k in self.samples[0] if k != "t"]
        return {f"max_{k}": max(s[k] for s in self.samples) for k in keys} | {
            "mean_router_cpu_pct": sum(s["router_cpu_pct"] for s in self.samples) / len(self.samples),
            "mean_clients_cpu_pct": sum(s["clients_cpu_pct"] for s in self.samples) / len(self.samples),
        }


def what_gave(mon: dict[str, float], nofile: int, error: str) -> str:
    """The first limit the samples show, in the order it would bite."""
    peer_cores = len(placement.PEER_CPUS or placement.ALL_CPUS)
    if mon.get("max_router_fds", 0) >= nofile * 0.95 or "Too many open files" in error:
        return f"file descriptors: the router held {mon.get('max_router_fds', 0):.0f} of {nofile}"
    if 0 <= mon.get("max_mem_available_mib", 1e9) < 512 or "MemoryError" in error:
        return "memory: under 512 MiB available"
    if mon.get("mean_router_cpu_pct", 0) >= 85:
        return f"the router's event loop: {mon['mean_router_cpu_pct']:.0f} % of its core on average while registering"
    if mon.get("mean_clients_cpu_pct", 0) >= 85 * peer_cores:
        return (
            f"the clients: {mon['mean_clients_cpu_pct']:.0f} % of their {peer_cores} core(s) "
            f"(the router at {mon.get('mean_router_cpu_pct', 0):.0f} %)"
        )
    if "CANCELLED after" in error or "UNAVAILABLE" in error:
        return (
            "registrations waited too long: a registering agent's connection was dropped (CANCELLED or "
            "UNAVAILABLE: a connect or keepalive deadline) while the router worked through the backlog "
            f"(router at {mon.get('mean_router_cpu_pct', 0):.0f} % of its core on average, the clients at "
            f"{mon.get('mean_clients_cpu_pct', 0):.0f} %)"
        )
    return "no resource at its limit in the samples: see the error"


async def run_mode(args: argparse.Namespace, mode: str, work: Path, certs: Path, nofile: int) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": mode, "steps": [], "error": None}
    async with Children(work / "logs" / f"agents-{mode}") as ch:
        if mode == "baseline":
            router = await routing.start_baseline(ch, certs)
            rchild: Child | None = None
            metrics_port = 0
        else:
            mport = work / "metrics-port"
            mport.unlink(missing_ok=True)
            extra = ["--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(mport)]
            router, rchild = await daemon.start_orchgpt(ch, certs, work / "data-agents", extra=extra)
            metrics_port = int(mport.read_text())
        await asyncio.sleep(1.0)
        rss0 = rss_bytes(router.pid)
        out["rss_empty_mib"] = rss0 / MIB
        idlers = []
        for i in range(args.procs):
            idlers.append(
                await ch.python(
                    f"{mode}-idlers-{i}",
                    "bench.peer",
                    [
                        *("idlers", "--mode", mode, "--target", router.target, "--certs", str(certs)),
                        *("--prefix", f"idle{i}-", "--pem-dir", str(work / "pems" / mode / str(i))),
                        *("--concurrency", str(args.concurrency), "--register-timeout", str(args.step_timeout)),
                        *("--cap", str(args.step_timeout * len(args.steps) + 600)),
                    ],
                    cpus=placement.PEER_CPUS,
                )
            )
        for c in idlers:
            await c.expect("ready", 60)
        current = 0
        for n in args.steps:
            mon = Monitor(router.pid, [c.pid for c in idlers])
            rc0 = cpu_seconds(router.pid)
            try:
                with mon:
                    secs = await _step(idlers, n - current, timeout=args.step_timeout)
            except BenchError as exc:
                summ = mon.summary()
                tail = rchild.log_tail(5) if rchild else ""
                out["error"] = f"N={n}: {exc}"[:1500]
                out["failed_step"] = {"agents": n, "monitor": summ, "router_log_tail": tail, "samples": mon.samples}
                out["gave_first"] = what_gave(summ, nofile, str(exc))
                break
            reg_cpu = cpu_seconds(router.pid) - rc0
            current = n
            await asyncio.sleep(args.settle)
            rss = rss_bytes(router.pid)
            m0 = msgrate.counts(metrics_port) if metrics_port else {}
            c0, w0 = cpu_seconds(router.pid), time.monotonic()
            await asyncio.sleep(args.idle_window)
            c1, w1 = cpu_seconds(router.pid), time.monotonic()
            msgs = msgrate.rates(m0, msgrate.counts(metrics_port), w1 - w0) if metrics_port else {}
            registered = n - (out["steps"][-1]["agents"] if out["steps"] else 0)
            step = {
                "agents": n,
                "register_s": secs,
                "registered_within_60s": secs + sum(x["register_s"] for x in out["steps"]) <= 60,
                "registrations_per_s": (n - (out["steps"][-1]["agents"] if out["steps"] else 0)) / secs,
                "register_router_cpu_pct": reg_cpu / secs * 100,
                "rss_mib": rss / MIB,
                "rss_per_agent_kib": (rss - rss0) / n / 1024,
                "idle_cpu_pct": (c1 - c0) / (w1 - w0) * 100,
                "idle_cpu_pct_per_1000_agents": (c1 - c0) / (w1 - w0) * 100 / n * 1000,
                "idle_messages_per_s": msgs,  # orchgpt: PINGs out, HEARTBEATs/PINGs/PONGs in
                "register_router_cpu_ms_per_agent": reg_cpu / registered * 1000,
                "router_fds": _fds(router.pid),
                "register_total_s": secs + sum(x["register_s"] for x in out["steps"]),
                "monitor": mon.summary(),
                "samples": mon.samples,
            }
            out["steps"].append(step)
            _log(
                f"{mode} N={n}: registered in {secs:.1f}s, RSS {step['rss_mib']:.0f} MiB "
                f"({step['rss_per_agent_kib']:.0f} KiB/agent), idle CPU {step['idle_cpu_pct']:.1f} % of a core, "
                f"registration {step['register_router_cpu_ms_per_agent']:.2f} ms of router CPU per agent"
            )
            if msgs:
                _log("idle messages/s: " + ", ".join(f"{k} {v:.1f}" for k, v in msgs.items()))
            for c in idlers:  # an idler whose agent was dropped ends with an error
                if c.proc.returncode is not None:
                    raise BenchError(f"{c.name} exited: {c.log_tail(5)}")
    return out


def _log(msg: str) -> None:
    print(f"[agents {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(res: dict[str, Any]) -> str:
    lines = [
        "| agents | router | this step's registrations (s) | first connect to last REGISTERED (s) | ≤ 60 s "
        "| RSS (MiB) | RSS/agent (KiB) | idle CPU (% core) |",
        "| ---: | --- | ---: | ---: | :---: | ---: | ---: | ---: |",
    ]
    for mode in res["modes"]:
        for s in res[mode]["steps"]:
            lines.append(
                f"| {s['agents']:,} | {mode} | {s['register_s']:.1f} | {s['register_total_s']:.1f} "
                f"| {'yes' if s['registered_within_60s'] else 'no'} "
                f"| {s['rss_mib']:.0f} | {s['rss_per_agent_kib']:.1f} | {s['idle_cpu_pct']:.1f} |"
            )
        if res[mode].get("error"):
            lines.append(f"\n{mode} stopped: {res[mode]['error'][:400]}\nwhat gave first: {res[mode]['gave_first']}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    # SIGINT/SIGTERM cancel the run, so that every child (the daemon too) is still stopped
    me = asyncio.current_task()
    assert me is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, me.cancel)
    placement.pin_self_to_peers()
    nofile = raise_nofile(args.nofile)[0]
    work = Path(tempfile.mkdtemp(prefix="orchgpt-bench-agents-"))
    certs = await asyncio.to_thread(tlsdir.make_certs, work / "certs", ["bench-a"])
    res: dict[str, Any] = {"machine": machine_info(), "nofile": nofile, "modes": args.modes, "work": str(work)}
    if nofile < args.nofile:
        res["nofile_note"] = (
            f"RLIMIT_NOFILE stays at {nofile}: the hard limit could not be raised to {args.nofile} "
            "(raising it needs CAP_SYS_RESOURCE, which this process lacks even as root in a container)"
        )
        _log(res["nofile_note"])
    _log(f"load average {os.getloadavg()}, RLIMIT_NOFILE {nofile}, steps {args.steps}, {placement.describe()}")
    for mode in args.modes:
        try:
            res[mode] = await asyncio.wait_for(run_mode(args, mode, work, certs, nofile), args.cap)
        except (BenchError, TimeoutError) as exc:
            res[mode] = {"steps": [], "error": f"{type(exc).__name__}: {exc}"[:1500], "gave_first": "see the error"}
    res["load_end"] = os.getloadavg()
    print(table(res))
    if res.get("nofile_note"):
        print(f"\n{res['nofile_note']}")
    print(f"\nload average at start {res['machine'].get('loadavg')}, at the end {res['load_end']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"JSON: {args.out}")
    return 0 if all(res[m].get("steps") for m in args.modes) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.agents", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="10000,20000", help="agents connected at each step (cumulative)")
    ap.add_argument("--modes", default="orchgpt,baseline", help="orchgpt, baseline (the bare relay) or both")
    ap.add_argument("--procs", type=int, default=8, help="client processes holding the agents")
    ap.add_argument("--concurrency", type=int, default=16, help="registrations at a time per client process")
    ap.add_argument("--idle-window", type=float, default=20.0, help="seconds over which idle CPU is measured")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after the last REGISTERED before RSS")
    ap.add_argument("--step-timeout", type=float, default=240.0, help="seconds a step may take to register")
    ap.add_argument("--nofile", type=int, default=200_000, help="RLIMIT_NOFILE to raise to (hard too, as root)")
    ap.add_argument("--cap", type=float, default=1800.0, help="seconds for each router")
    ap.add_argument("--out", default="bench/results/agents.json")
    args = ap.parse_args(argv)
    args.steps = sorted(int(x) for x in args.steps.split(","))
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        return asyncio.run(main_async(args))
    except asyncio.CancelledError:  # SIGINT/SIGTERM: the children were stopped
        print("stopped by a signal", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
