"""The benchmark's phases (routing, autogen, scale, startup, tasks): what each measures, within its
cap, and the profile and context they run with."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import daemon, placement, pyspy, routing, scale, startup
from bench.children import Children
from bench.report import median

AUTOGEN_NOTE = (
    "AutoGen's host listens without TLS (GrpcWorkerAgentRuntimeHost uses add_insecure_port): "
    "plaintext AutoGen against mutual-TLS orchgpt"
)
EVENTS_NOTE = (
    "orchgpt runs with its default settings (--max-pending-events 10,000): a watcher that "
    "falls behind gets token deltas coalesced (orchgpt/wire/coalesce.py), counted here as deltas"
)


@dataclass(frozen=True)
class Profile:
    name: str
    inflight: tuple[int, ...]
    rt_reps: int  # alternations of the routers per in-flight setting
    rt_warmup: float
    rt_duration: float
    ev_rounds: int
    ev_agents: int
    ev_per_agent: int
    ev_warmup: float
    ev_duration: float
    scale_steps: tuple[int, ...]
    scale_procs: int
    scale_budget: float  # seconds for orchgpt; the relay then holds the same steps
    idle_window: float
    spawn_reps: int
    cli_reps: int
    tasks_count: int
    tasks_inflight: tuple[int, ...]
    tasks_agents: int = 1  # echo agents the daemon may spawn for the tasks phase
    # tasks each of them runs at once (orchgpt --local-agent-concurrency; agentd --concurrency): 64,
    # so that the 64-in-flight row has 64 tasks running, not 64 queued behind one; 1: the old rows
    tasks_concurrency: int = 64
    rabbit_duration: float = 3.0  # seconds measured per in-flight setting (bench/rabbit.py)
    tok_agents: int = 64  # tokens phase (bench/tokens.py): streaming agents
    tok_rate: float = 50_000.0  # deltas/s in all, paced run
    tok_seconds: float = 4.0  # seconds of deltas each run sends
    tok_duration: float = 3.0  # the measured window


PROFILES = {
    "full": Profile(
        "full",
        inflight=(1, 64),
        rt_reps=5,
        rt_warmup=0.3,
        rt_duration=1.2,
        ev_rounds=2,
        ev_agents=8,
        ev_per_agent=12_000,
        ev_warmup=0.5,
        ev_duration=3.0,
        scale_steps=(100, 1000, 3000, 5000, 10_000),
        scale_procs=4,
        scale_budget=240,
        idle_window=5.0,
        spawn_reps=3,
        cli_reps=5,
        tasks_count=2000,  # long enough for the profile behind the rows' "why" (a few hundred samples)
        tasks_inflight=(1, 16, 64),
    ),
    "quick": Profile(
        "quick",
        inflight=(1, 64),
        rt_reps=2,
        rt_warmup=0.3,
        rt_duration=1.0,
        ev_rounds=1,
        ev_agents=8,
        ev_per_agent=8000,
        ev_warmup=0.5,
        ev_duration=2.0,
        scale_steps=(100, 1000),
        scale_procs=2,
        scale_budget=40,
        idle_window=5.0,
        spawn_reps=1,
        cli_reps=3,
        tasks_count=200,
        tasks_inflight=(1, 64),
        rabbit_duration=2.0,
        tok_seconds=3.0,
        tok_duration=2.0,
    ),
    # the CI smoke test: proves the harness runs, measures nothing worth reading
    "smoke": Profile(
        "smoke",
        inflight=(1, 8),
        rt_reps=1,
        rt_warmup=0.2,
        rt_duration=0.5,
        ev_rounds=1,
        ev_agents=2,
        ev_per_agent=1500,
        ev_warmup=0.2,
        ev_duration=0.5,
        scale_steps=(10,),
        scale_procs=1,
        scale_budget=10,
        idle_window=1.0,
        spawn_reps=1,
        cli_reps=1,
        tasks_count=10,
        tasks_inflight=(1, 4),
        rabbit_duration=0.5,
        tok_agents=4,
        tok_rate=2000.0,
        tok_seconds=1.5,
        tok_duration=0.5,
    ),
}


@dataclass
class Ctx:
    profile: Profile
    work: Path
    certs: Path
    results: dict[str, Any]

    def logs(self, name: str) -> Path:
        return self.work / "logs" / name


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- phases
async def _events_one(ctx: Ctx, i: int, mode: str) -> dict[str, Any]:
    """One events run against a fresh router (the emitters' tasks die with it)."""
    p = ctx.profile
    async with Children(ctx.logs(f"events-{i}-{mode}")) as ch:
        if mode == "baseline":
            router = await routing.start_baseline(ch, ctx.certs)
            starter = None
        else:
            router, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / f"data-events-{i}")
            starter = routing.task_starter(router)
        return await routing.events(
            ch, router, p.ev_agents, p.ev_per_agent, p.ev_warmup, p.ev_duration, start_tasks=starter
        )


async def phase_routing(ctx: Ctx, with_autogen: bool = True, with_relays: bool = True) -> dict[str, Any]:
    """Round trips: every router (relay, orchgpt, AutoGen) is up with its peers at once and
    they are measured in alternation, a second or so each, in a rotating order, so that
    paired samples see the same machine load. Then token events, a fresh router per run."""
    p = ctx.profile
    out: dict[str, Any] = {"round_trips": {}, "events": []}
    autogen_error = None
    async with Children(ctx.logs("round-trips")) as ch:
        peers: dict[str, routing.RoundTripPeers] = {}
        if with_relays:
            relay = await routing.start_baseline(ch, ctx.certs)
            peers["baseline"] = await routing.round_trip_peers(ch, relay)
            orch, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / "data-round-trips")
            peers["orchgpt"] = await routing.round_trip_peers(ch, orch)
        if with_autogen:
            from bench.autogen_peer import bench as autogen
            from bench.autogen_peer.venv import VenvError

            try:
                peers["autogen"] = await autogen.round_trip_peers(ch)
            except VenvError as exc:
                autogen_error = str(exc)
                _log(f"autogen left out: {exc}")
        modes = list(peers)
        pids = {"baseline": relay.pid, "orchgpt": orch.pid} if with_relays else {}
        samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for n in p.inflight:
            for rep in range(p.rt_reps):
                k = rep % len(modes)
                for mode in modes[k:] + modes[:k]:
                    r = await peers[mode].measure(n, p.rt_warmup, p.rt_duration)
                    r["rep"] = rep
                    samples[mode].append(r)
            if n == p.inflight[0]:  # one more run of orchgpt and the relay each, profiled: the row's "why"
                for mode, pid in pids.items():
                    async with pyspy.DaemonProfile(pid, ctx.work / f"profile-rt-{mode}.raw") as prof:
                        await peers[mode].measure(n, p.rt_warmup, max(4.0, p.rt_duration))
                    out.setdefault("profiles", {})[mode] = prof.result()
            _log(
                f"round trips, {n} in flight: "
                + ", ".join(f"{m} {median([x['rps'] for x in samples[m] if x['inflight'] == n]):.0f}/s" for m in modes)
            )
        out["round_trips"] = samples
    if with_relays:
        for i in range(p.ev_rounds):
            one = {}
            for mode in ("baseline", "orchgpt") if i % 2 == 0 else ("orchgpt", "baseline"):
                one[mode] = await _events_one(ctx, i, mode)
            out["events"].append(one)
            _log(f"events round {i + 1}/{p.ev_rounds}: " + ", ".join(f"{m} {one[m]['eps']:.0f}/s" for m in one))
    if autogen_error is not None:
        out["autogen_error"] = autogen_error
    return out


async def phase_autogen(ctx: Ctx) -> dict[str, Any]:
    """AutoGen alone (only when the routing phase is not run, which measures it beside the others)."""
    return await phase_routing(ctx, with_autogen=True, with_relays=False)


async def phase_scale(ctx: Ctx) -> dict[str, Any]:
    """orchgpt grows as far as its time budget holds; the relay then holds the same steps."""
    p = ctx.profile
    out: dict[str, Any] = {}
    for mode in ("orchgpt", "baseline"):

        async def start(ch: Children, mode: str = mode) -> routing.Router:
            if mode == "baseline":
                return await routing.start_baseline(ch, ctx.certs)
            r, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / "data-scale")
            return r

        if mode == "orchgpt":
            steps, budget, adaptive = list(p.scale_steps), p.scale_budget, True
        else:
            steps = [s["agents"] for s in out["orchgpt"]["steps"]] or list(p.scale_steps)[:1]
            budget, adaptive = p.scale_budget * 2, False
        out[mode] = await scale.run_scale(
            ctx.logs(f"scale-{mode}"),
            start,
            steps,
            p.scale_procs,
            budget,
            p.idle_window,
            ctx.work / "scale-certs",
            adaptive=adaptive,
        )
        _log(
            f"scale {mode}: "
            + ", ".join(f"N={s['agents']} {s['rss_mib']:.0f} MiB" for s in out[mode]["steps"])
            + (f" ({out[mode]['error']})" if out[mode].get("error") else "")
        )
    return out


async def phase_startup(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    async with Children(ctx.logs("startup")) as ch:
        relay = await routing.start_baseline(ch, ctx.certs)
        # not pinned: an agent starts as it would on this machine
        minimal = await startup.minimal_agent_ready(ch, relay.target, ctx.certs, p.spawn_reps)
        orch, _ = await daemon.start_orchgpt(
            ch, ctx.certs, ctx.work / "data-startup", spawn=True, cpus=None, extra=["--max-local-agents", "1"]
        )
        spawn = await startup.spawn_to_ready(ch, orch.target, orch.pid, ctx.certs, p.spawn_reps)
        cli = await asyncio.to_thread(startup.cli_start, orch.target, ctx.certs, ctx.work / "cli-history", p.cli_reps)
    _log(
        f"startup: spawn-to-ready {median([s['spawn_to_ready_s'] for s in spawn]):.2f}s, "
        f"minimal agent {median(minimal):.2f}s, CLI {cli['cli_median_s']:.2f}s, "
        f"import {cli['import_median_s']:.2f}s"
    )
    return {"minimal_agent_s": minimal, "spawn": spawn, "cli": cli}


async def phase_tasks(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    async with Children(ctx.logs("tasks")) as ch:
        orch, _ = await daemon.start_orchgpt(
            ch,
            ctx.certs,
            ctx.work / "data-tasks",
            spawn=True,
            cpus=None,
            extra=[
                "--max-local-agents",
                str(p.tasks_agents),
                "--local-agent-concurrency",
                str(p.tasks_concurrency),
            ],
        )
        res: list[dict[str, Any]] = []
        stream: list[dict[str, Any]] = []  # the same load on one SubmitStream call (results only)
        for submit, out in (("single", res), ("stream", stream)):
            for n in p.tasks_inflight:  # the largest in-flight count is profiled: the rows' "why"
                top = n == max(p.tasks_inflight)
                raw = ctx.work / ("profile-tasks.raw" if submit == "single" else "profile-tasks-stream.raw")
                async with pyspy.profile_if(top, orch.pid, raw) as prof:
                    out += await startup.task_overhead(
                        ch, orch.target, orch.pid, ctx.certs, p.tasks_count, [n], placement.PEER_CPUS, submit
                    )
                if top:
                    out[-1]["profile"] = prof.result()
    for how, rs in (("Submit per task", res), ("one SubmitStream", stream)):
        _log(
            f"tasks, {how}: "
            + ", ".join(
                f"{r['inflight']} in flight {r['tasks_per_s']:.0f}/s, daemon {r['router_cpu_us_per_task']:.0f} µs/task"
                for r in rs
            )
        )
    return {"results": res, "stream": stream, "agents": p.tasks_agents}


def phase_caps(p: Profile) -> dict[str, float]:
    rt = len(p.inflight) * p.rt_reps * 3 * (p.rt_warmup + p.rt_duration + 5) + 120
    ev = p.ev_rounds * 2 * (p.ev_warmup + p.ev_duration + 60)
    return {
        "routing": rt + ev,
        "autogen": 600 + len(p.inflight) * p.rt_reps * (p.rt_warmup + p.rt_duration + 5),
        "scale": 3 * p.scale_budget + 8 * p.idle_window + 300,
        "startup": 120 + p.spawn_reps * 40 + p.cli_reps * 20,
        "tasks": 480,  # Submit per task, then the same on one SubmitStream
        "tasks_pg": 420,  # a PostgreSQL server's initdb and start, then the same as "tasks"
        "rabbitmq": 480,
        "tokens": p.ev_rounds * 4 * (p.tok_seconds * 4 + p.ev_warmup + p.tok_duration + 90),
    }
