"""Run every benchmark, print a Markdown table, write JSON.

    python -m bench.run [--quick] [--out bench/results/latest.json]
    python bench/run.py --quick

Each figure is a ratio against a baseline measured in the same run: the
machines are shared and noisy. Phases (each with a wall-clock cap; a failing
phase is reported and the others still run):

- routing: round trips (1 and 64 in flight) and token-event throughput through
  the baseline relay and orchgpt, alternating, several rounds, medians;
- autogen: the same round trips through AutoGen's distributed runtime;
- scale: idle agents with heartbeats, 100 and 1,000 and on towards 10,000;
- startup: spawn-to-ready of a local agent, CLI start-to-prompt;
- tasks: echo tasks per second through create, assign, complete and stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import daemon, placement, report, routing, scale, startup, tlsdir
from bench.children import Children, raise_fd_limit
from bench.machine import machine_info
from bench.report import Row, median, row

PHASES = ("routing", "autogen", "scale", "startup", "tasks")
AUTOGEN_NOTE = ("AutoGen's host listens without TLS (GrpcWorkerAgentRuntimeHost uses add_insecure_port): "
                "plaintext AutoGen against mutual-TLS orchgpt")
EVENTS_NOTE = ("orchgpt runs with its default settings (--max-pending-events 10,000): a watcher that "
               "falls behind gets token deltas coalesced (orchgpt/wire/coalesce.py), counted here as deltas")


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


PROFILES = {
    "full": Profile("full", inflight=(1, 64), rt_reps=5, rt_warmup=0.3, rt_duration=1.2, ev_rounds=2,
                    ev_agents=8, ev_per_agent=12_000, ev_warmup=0.5, ev_duration=3.0,
                    scale_steps=(100, 1000, 3000, 5000, 10_000), scale_procs=4, scale_budget=240,
                    idle_window=5.0, spawn_reps=3, cli_reps=5, tasks_count=300, tasks_inflight=(1, 16)),
    "quick": Profile("quick", inflight=(1, 64), rt_reps=2, rt_warmup=0.3, rt_duration=1.0, ev_rounds=1,
                     ev_agents=8, ev_per_agent=8000, ev_warmup=0.5, ev_duration=2.0, scale_steps=(100, 1000),
                     scale_procs=2, scale_budget=40, idle_window=5.0, spawn_reps=1, cli_reps=3,
                     tasks_count=100, tasks_inflight=(1, 16)),
    # the CI smoke test: proves the harness runs, measures nothing worth reading
    "smoke": Profile("smoke", inflight=(1, 8), rt_reps=1, rt_warmup=0.2, rt_duration=0.5, ev_rounds=1,
                     ev_agents=2, ev_per_agent=1500, ev_warmup=0.2, ev_duration=0.5, scale_steps=(10,),
                     scale_procs=1, scale_budget=10, idle_window=1.0, spawn_reps=1, cli_reps=1,
                     tasks_count=10, tasks_inflight=(1, 4)),
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
        return await routing.events(ch, router, p.ev_agents, p.ev_per_agent, p.ev_warmup, p.ev_duration,
                                    start_tasks=starter)


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
        samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for n in p.inflight:
            for rep in range(p.rt_reps):
                k = rep % len(modes)
                for mode in modes[k:] + modes[:k]:
                    r = await peers[mode].measure(n, p.rt_warmup, p.rt_duration)
                    r["rep"] = rep
                    samples[mode].append(r)
            _log(f"round trips, {n} in flight: " + ", ".join(
                f"{m} {median([x['rps'] for x in samples[m] if x['inflight'] == n]):.0f}/s" for m in modes))
        out["round_trips"] = samples
    if with_relays:
        for i in range(p.ev_rounds):
            one = {}
            for mode in (("baseline", "orchgpt") if i % 2 == 0 else ("orchgpt", "baseline")):
                one[mode] = await _events_one(ctx, i, mode)
            out["events"].append(one)
            _log(f"events round {i + 1}/{p.ev_rounds}: " + ", ".join(
                f"{m} {one[m]['eps']:.0f}/s" for m in one))
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
        out[mode] = await scale.run_scale(ctx.logs(f"scale-{mode}"), start, steps, p.scale_procs, budget,
                                          p.idle_window, ctx.work / "scale-certs", adaptive=adaptive)
        _log(f"scale {mode}: " + ", ".join(
            f"N={s['agents']} {s['rss_mib']:.0f} MiB" for s in out[mode]["steps"]) + (
            f" ({out[mode]['error']})" if out[mode].get("error") else ""))
    return out


async def phase_startup(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    async with Children(ctx.logs("startup")) as ch:
        relay = await routing.start_baseline(ch, ctx.certs)
        # not pinned: an agent starts as it would on this machine
        minimal = await startup.minimal_agent_ready(ch, relay.target, ctx.certs, p.spawn_reps)
        orch, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / "data-startup", spawn=True,
                                             cpus=None, extra=["--max-local-agents", "1"])
        spawn = await startup.spawn_to_ready(ch, orch.target, orch.pid, ctx.certs, p.spawn_reps)
        cli = await asyncio.to_thread(startup.cli_start, orch.target, ctx.certs,
                                      ctx.work / "cli-history", p.cli_reps)
    _log(f"startup: spawn-to-ready {median([s['spawn_to_ready_s'] for s in spawn]):.2f}s, "
         f"minimal agent {median(minimal):.2f}s, CLI {cli['cli_median_s']:.2f}s, "
         f"import {cli['import_median_s']:.2f}s")
    return {"minimal_agent_s": minimal, "spawn": spawn, "cli": cli}


async def phase_tasks(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    async with Children(ctx.logs("tasks")) as ch:
        orch, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / "data-tasks", spawn=True,
                                             cpus=None, extra=["--max-local-agents", "1"])
        res = await startup.task_overhead(ch, orch.target, orch.pid, ctx.certs, p.tasks_count,
                                          list(p.tasks_inflight), placement.PEER_CPUS)
    _log("tasks: " + ", ".join(f"{r['inflight']} in flight {r['tasks_per_s']:.0f}/s" for r in res))
    return {"results": res}


def phase_caps(p: Profile) -> dict[str, float]:
    rt = len(p.inflight) * p.rt_reps * 3 * (p.rt_warmup + p.rt_duration + 5) + 120
    ev = p.ev_rounds * 2 * (p.ev_warmup + p.ev_duration + 60)
    return {
        "routing": rt + ev,
        "autogen": 600 + len(p.inflight) * p.rt_reps * (p.rt_warmup + p.rt_duration + 5),
        "scale": 3 * p.scale_budget + 8 * p.idle_window + 300,
        "startup": 120 + p.spawn_reps * 40 + p.cli_reps * 20,
        "tasks": 240,
    }


PHASE_FNS: dict[str, Callable[[Ctx], Awaitable[dict[str, Any]]]] = {
    "routing": phase_routing, "autogen": phase_autogen, "scale": phase_scale,
    "startup": phase_startup, "tasks": phase_tasks,
}


# ---------------------------------------------------------------- the table
def _samples(results: dict[str, Any], mode: str, inflight: int) -> list[dict[str, Any]]:
    rts = {**results.get("autogen", {}).get("round_trips", {}), **results.get("routing", {}).get("round_trips", {})}
    return [x for x in rts.get(mode, []) if x["inflight"] == inflight]


def _rt(results: dict[str, Any], mode: str, inflight: int, key: str) -> float | None:
    return median([x[key] for x in _samples(results, mode, inflight)])


def _pair_ratio(results: dict[str, Any], a: str, b: str, inflight: int, key: str) -> float | None:
    """Median over repetitions of a/b, each pair measured back to back."""
    bs = {x["rep"]: x[key] for x in _samples(results, b, inflight)}
    return median([x[key] / bs[x["rep"]] for x in _samples(results, a, inflight)
                   if x[key] is not None and bs.get(x["rep"])])


def _ev(results: dict[str, Any], mode: str, key: str) -> float | None:
    return median([rd[mode][key] for rd in results.get("routing", {}).get("events", []) if mode in rd])


def _ev_ratio(results: dict[str, Any], key: str) -> float | None:
    return median([rd["orchgpt"][key] / rd["baseline"][key] for rd in results.get("routing", {}).get("events", [])
                   if "orchgpt" in rd and "baseline" in rd and rd["baseline"][key]])


def _scale_step(results: dict[str, Any], mode: str, n: int) -> dict[str, Any] | None:
    for s in results.get("scale", {}).get(mode, {}).get("steps", []):
        if s["agents"] == n:
            return dict(s)
    return None


def build_rows(results: dict[str, Any], p: Profile) -> list[Row]:
    rows: list[Row] = []
    lo, hi = p.inflight[0], p.inflight[-1]
    has_ag = bool(_samples(results, "autogen", lo))
    if _samples(results, "orchgpt", lo):
        for n in (lo, hi):
            tgt = ("≥ 0.9× baseline", lambda r: r >= 0.9) if n == lo else ("—", None)
            for key, label, unit, t in (("rps", "round trips/s", "rt/s", tgt), ("p50_ms", "p50 latency", "ms", None),
                                        ("p99_ms", "p99 latency", "ms", None),
                                        ("router_cpu_us_per_rt", "router CPU per round trip", "µs", None)):
                rows.append(row(f"{label}, {n} in flight", _rt(results, "orchgpt", n, key),
                                _rt(results, "baseline", n, key), "relay", unit,
                                t[0] if t else "—", t[1] if t else None,
                                ratio_of=_pair_ratio(results, "orchgpt", "baseline", n, key)))
    if has_ag:
        for n in (lo, hi):
            rows.append(row(f"round trips/s, {n} in flight, vs AutoGen",
                            _rt(results, "orchgpt", n, "rps"), _rt(results, "autogen", n, "rps"), "AutoGen",
                            "rt/s", "≥ 1.5× AutoGen", lambda r: r >= 1.5, note=AUTOGEN_NOTE,
                            ratio_of=_pair_ratio(results, "orchgpt", "autogen", n, "rps")))
        for key, label, unit in (("p50_ms", "p50 latency", "ms"), ("router_cpu_us_per_rt", "router CPU per round trip", "µs")):
            for n in (lo, hi):
                rows.append(row(f"{label}, {n} in flight, vs AutoGen", _rt(results, "orchgpt", n, key),
                                _rt(results, "autogen", n, key), "AutoGen", unit, note=AUTOGEN_NOTE,
                                ratio_of=_pair_ratio(results, "orchgpt", "autogen", n, key)))
    if results.get("routing", {}).get("events"):
        rows.append(row(f"token events/s, {p.ev_agents} agents → 1 watching client",
                        _ev(results, "orchgpt", "eps"), _ev(results, "baseline", "eps"), "relay pump",
                        "ev/s", "≥ 3× baseline", lambda r: r >= 3, note=EVENTS_NOTE,
                        ratio_of=_ev_ratio(results, "eps")))
        rows.append(row("events per frame to the client", _ev(results, "orchgpt", "events_per_frame"),
                        _ev(results, "baseline", "events_per_frame"), "relay pump", ""))
        rows.append(row("router CPU per event", _ev(results, "orchgpt", "router_cpu_us_per_event"),
                        _ev(results, "baseline", "router_cpu_us_per_event"), "relay pump", "µs",
                        ratio_of=_ev_ratio(results, "router_cpu_us_per_event")))
    if "scale" in results:
        key_n = 1000 if _scale_step(results, "orchgpt", 1000) else max(
            [s["agents"] for s in results["scale"].get("orchgpt", {}).get("steps", [])] or [0])
        o, b = _scale_step(results, "orchgpt", key_n), _scale_step(results, "baseline", key_n)
        if o or b:
            def get(s: dict[str, Any] | None, k: str) -> float | None:
                return None if s is None else s.get(k)

            target = ("< 200 MB", lambda v: v * 1.048576 < 200) if key_n == 1000 else ("—", None)
            rows.append(row(f"daemon RSS, {key_n:,} idle agents", get(o, "rss_mib"), get(b, "rss_mib"),
                            "relay", "MiB", target[0], target[1], on="value"))
            rows.append(row(f"RSS per agent, {key_n:,} agents", get(o, "rss_per_agent_kib"),
                            get(b, "rss_per_agent_kib"), "relay", "KiB"))
            rows.append(row(f"CPU at idle, {key_n:,} agents (heartbeats)", get(o, "idle_cpu_pct"),
                            get(b, "idle_cpu_pct"), "relay", "% core"))
            rows.append(row(f"time to register {key_n:,} agents", get(o, "register_total_s"),
                            get(b, "register_total_s"), "relay", "s"))
        top_o = (results["scale"].get("orchgpt", {}).get("steps") or [None])[-1]
        top_b = (results["scale"].get("baseline", {}).get("steps") or [None])[-1]
        if top_o:
            why = "; ".join(f"{m}: {results['scale'][m][k]}".replace("\n", " ")[:300]
                            for m in ("orchgpt", "baseline") for k in ("error", "stopped")
                            if results["scale"].get(m, {}).get(k))
            rows.append(row("most idle agents connected (within the time budget)", top_o["agents"],
                            top_b["agents"] if top_b else None, "relay", "", "towards 10,000",
                            note=f"where the growth stopped: {why}" if why else ""))
            rows.append(row(f"daemon RSS at {top_o['agents']:,} agents", top_o["rss_mib"],
                            (_scale_step(results, "baseline", top_o["agents"]) or {}).get("rss_mib"),
                            "relay", "MiB"))
    if "startup" in results:
        st = results["startup"]
        rows.append(row("spawn-to-ready of a local agent", median([s["spawn_to_ready_s"] for s in st["spawn"]]),
                        median(st["minimal_agent_s"]), "minimal TLS agent", "s", "< 1 s",
                        lambda v: v < 1.0, on="value"))
        rows.append(row("CLI start-to-prompt", st["cli"]["cli_median_s"], st["cli"]["import_median_s"],
                        "import prompt_toolkit, grpc", "s", "< 1.3× import", lambda r: r < 1.3))
    if "tasks" in results:
        for r in results["tasks"]["results"]:
            base = _rt(results, "baseline", 1, "rps") if r["inflight"] == 1 else None
            rows.append(row(f"echo tasks/s (create, assign, complete, stored), {r['inflight']} in flight",
                            r["tasks_per_s"], base, "relay round trips/s" if base else "", "/s"))
            rows.append(row(f"daemon CPU per task, {r['inflight']} in flight",
                            r.get("router_cpu_us_per_task"), None, "", "µs"))
    return rows


def _problems(results: dict[str, Any]) -> list[str]:
    """Failures inside a phase that did not stop it (a scale step that broke)."""
    out = []
    for mode, r in results.get("scale", {}).items():
        if isinstance(r, dict) and r.get("error"):
            out.append(f"scale {mode}: {r['error']}")
    return out


# ---------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> int:
    p = PROFILES[args.profile]
    phases = [ph for ph in PHASES if ph not in set(args.skip or []) and (not args.only or ph in args.only)]
    placement.pin_self_to_peers()
    raise_fd_limit()
    info = machine_info()
    work = Path(tempfile.mkdtemp(prefix="orchgpt-bench-"))
    names = ["bench-a", "bench-b", *[f"bench-tok-{i}" for i in range(p.ev_agents)]]
    certs = await asyncio.to_thread(tlsdir.make_certs, work / "certs", names)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    ctx = Ctx(p, work, certs, results)
    caps = phase_caps(p)
    t_all = time.monotonic()
    _log(f"profile {p.name}, phases {', '.join(phases)}; work dir {work}; {placement.describe()}")
    try:
        for ph in phases:
            t0 = time.monotonic()
            if ph == "autogen" and "routing" in phases:
                continue  # measured inside the routing rounds
            fn = PHASE_FNS[ph]
            cap = caps[ph]
            if ph == "routing" and "autogen" in phases:
                fn = phase_routing
                cap += caps["autogen"]
            elif ph == "routing":
                async def fn(ctx: Ctx) -> dict[str, Any]:
                    return await phase_routing(ctx, with_autogen=False)
            try:
                results[ph] = await asyncio.wait_for(fn(ctx), cap)
                if results[ph].get("autogen_error"):
                    errors["autogen"] = f"AutoGen could not be installed: {results[ph]['autogen_error']}"
            except Exception as exc:  # report, go on with the next phase
                reason = f"timed out after {caps[ph]:.0f}s" if isinstance(exc, TimeoutError) else str(exc)
                errors[ph] = f"{type(exc).__name__}: {reason}"
                _log(f"{ph} FAILED: {errors[ph]}")
            seconds[ph] = time.monotonic() - t0
    finally:
        problems = _problems(results)
        keep = args.keep or bool(errors) or bool(problems)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = build_rows(results, p)
    table = report.markdown(rows)
    place = placement.describe()
    print(table)
    print()
    print(report.machine_lines(info, place))
    print(f"Profile {p.name}; total {time.monotonic() - t_all:.0f}s "
          f"({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}).")
    if problems:
        print("\nProblems (the phase went on with what it had):")
        for p_ in problems:
            print(f"- {p_}")
    if errors:
        print("\nFailed phases:")
        for ph, e in errors.items():
            print(f"- {ph}: {e}")
    if errors or problems:
        print(f"(logs kept in {work}/logs)")
    doc = {
        "machine": info, "placement": place, "profile": asdict(p), "phases": phases,
        "seconds": seconds, "total_seconds": time.monotonic() - t_all, "errors": errors,
        "problems": problems,
        "table": [r.as_dict() for r in rows], "table_markdown": table, "results": results,
        "logs": str(work / "logs") if keep else None,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"JSON: {out}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", dest="profile", action="store_const", const="quick",
                    help="one round, shorter runs, 1,000 agents at most (about 2 minutes)")
    ap.add_argument("--profile", choices=sorted(PROFILES), help="full (default), quick or smoke (CI)")
    ap.add_argument("--out", default="bench/results/latest.json", help="where to write the JSON ('' for none)")
    ap.add_argument("--skip", action="append", choices=PHASES, help="leave out a phase (repeatable)")
    ap.add_argument("--only", action="append", choices=PHASES, help="run only these phases (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (certificates, logs)")
    ap.set_defaults(profile="full")
    args = ap.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
