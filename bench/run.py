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
from bench.children import Children
from bench.machine import machine_info
from bench.report import Row, median, row

PHASES = ("routing", "autogen", "scale", "startup", "tasks")
AUTOGEN_NOTE = ("AutoGen's host listens without TLS (GrpcWorkerAgentRuntimeHost uses add_insecure_port): "
                "plaintext AutoGen against mutual-TLS orchgpt")
EVENTS_NOTE = ("orchgpt runs with --max-pending-events 1000000 here: with the default (10,000) a burst "
               "from the emitters overflows the watcher's buffer and the daemon drops the watch stream")


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int
    warmup: float
    duration: float
    inflight: tuple[int, ...]
    ev_agents: int
    ev_per_agent: int
    ev_warmup: float
    ev_duration: float
    scale_steps: tuple[int, ...]
    scale_procs: int
    scale_budget: float  # seconds per router
    idle_window: float
    spawn_reps: int
    cli_reps: int
    tasks_count: int
    tasks_inflight: tuple[int, ...]
    autogen_rounds: int


PROFILES = {
    "full": Profile("full", rounds=3, warmup=0.5, duration=2.5, inflight=(1, 64), ev_agents=8,
                    ev_per_agent=12_000, ev_warmup=0.5, ev_duration=3.0,
                    scale_steps=(100, 1000, 3000, 5000, 10_000), scale_procs=4, scale_budget=100,
                    idle_window=5.0, spawn_reps=3, cli_reps=5, tasks_count=300, tasks_inflight=(1, 16),
                    autogen_rounds=2),
    "quick": Profile("quick", rounds=1, warmup=0.5, duration=1.5, inflight=(1, 64), ev_agents=8,
                     ev_per_agent=8000, ev_warmup=0.5, ev_duration=2.0, scale_steps=(100, 1000),
                     scale_procs=2, scale_budget=40, idle_window=5.0, spawn_reps=1, cli_reps=3,
                     tasks_count=100, tasks_inflight=(1, 16), autogen_rounds=1),
    # the CI smoke test: proves the harness runs, measures nothing worth reading
    "smoke": Profile("smoke", rounds=1, warmup=0.2, duration=0.5, inflight=(1, 8), ev_agents=2,
                     ev_per_agent=1500, ev_warmup=0.2, ev_duration=0.5, scale_steps=(10,),
                     scale_procs=1, scale_budget=10, idle_window=1.0, spawn_reps=1, cli_reps=1,
                     tasks_count=10, tasks_inflight=(1, 4), autogen_rounds=1),
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
async def _routing_one(ctx: Ctx, i: int, mode: str) -> dict[str, Any]:
    p = ctx.profile
    async with Children(ctx.logs(f"routing-{i}-{mode}")) as ch:
        if mode == "autogen":
            from bench.autogen_peer import bench as autogen

            r = await autogen.round_trips(ch, list(p.inflight), p.warmup, p.duration)
            return {"round_trips": r["results"], "tls": False}
        if mode == "baseline":
            router = await routing.start_baseline(ch, ctx.certs)
            starter = None
        else:
            router, _ = await daemon.start_orchgpt(
                ch, ctx.certs, ctx.work / f"data-routing-{i}", extra=["--max-pending-events", "1000000"])
            starter = routing.task_starter(router)
        rt = await routing.round_trips(ch, router, list(p.inflight), p.warmup, p.duration)
        ev = await routing.events(ch, router, p.ev_agents, p.ev_per_agent, p.ev_warmup, p.ev_duration,
                                  start_tasks=starter)
        return {"round_trips": rt, "events": ev}


async def phase_routing(ctx: Ctx, with_autogen: bool = True, with_relays: bool = True) -> dict[str, Any]:
    """Rounds of baseline relay, orchgpt and AutoGen, in a rotating order (the load of a
    shared machine drifts: every round compares routers measured a few seconds apart)."""
    p = ctx.profile
    modes = ["baseline", "orchgpt"] if with_relays else []
    autogen_error = None
    if with_autogen:
        from bench.autogen_peer.venv import VenvError, ensure_venv

        try:
            await asyncio.to_thread(ensure_venv)
            modes.append("autogen")
        except VenvError as exc:
            autogen_error = str(exc)
            _log(f"autogen left out: {exc}")
    rounds: list[dict[str, Any]] = []
    n = p.rounds if with_relays else p.autogen_rounds
    for i in range(n):
        k = i % len(modes)
        one: dict[str, Any] = {}
        for mode in modes[k:] + modes[:k]:
            if mode == "autogen" and i >= p.autogen_rounds:
                continue
            one[mode] = await _routing_one(ctx, i, mode)
            ev = one[mode].get("events")
            _log(f"routing round {i + 1}/{n} {mode}: "
                 + ", ".join(f"{r['inflight']} in flight {r['rps']:.0f} rt/s" for r in one[mode]["round_trips"])
                 + (f", events {ev['eps']:.0f}/s" if ev else ""))
        rounds.append(one)
    if autogen_error is not None:
        raise RuntimeError(f"AutoGen could not be installed: {autogen_error}")
    return {"rounds": rounds}


async def phase_autogen(ctx: Ctx) -> dict[str, Any]:
    """AutoGen alone (only when the routing phase is not run, which interleaves it)."""
    return await phase_routing(ctx, with_autogen=True, with_relays=False)


async def phase_scale(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    out = {}
    for mode in ("baseline", "orchgpt"):
        async def start(ch: Children, mode: str = mode) -> routing.Router:
            if mode == "baseline":
                return await routing.start_baseline(ch, ctx.certs)
            r, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / "data-scale")
            return r

        out[mode] = await scale.run_scale(ctx.logs(f"scale-{mode}"), start, list(p.scale_steps),
                                          p.scale_procs, p.scale_budget, p.idle_window,
                                          ctx.work / "scale-certs")
        steps = out[mode]["steps"]
        _log(f"scale {mode}: " + ", ".join(
            f"N={s['agents']} {s['rss_mib']:.0f} MiB" for s in steps) + (
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
    per_round = 2 * (2 * (p.warmup + p.duration + 15) + p.ev_warmup + p.ev_duration + 40)
    return {
        "routing": p.rounds * per_round + 30,
        "autogen": 600 + p.autogen_rounds * (2 * (p.warmup + p.duration) + 90),
        "scale": 2 * (p.scale_budget + 4 * p.idle_window + 240),
        "startup": 120 + p.spawn_reps * 40 + p.cli_reps * 20,
        "tasks": 240,
    }


PHASE_FNS: dict[str, Callable[[Ctx], Awaitable[dict[str, Any]]]] = {
    "routing": phase_routing, "autogen": phase_autogen, "scale": phase_scale,
    "startup": phase_startup, "tasks": phase_tasks,
}


# ---------------------------------------------------------------- the table
def _rt(results: dict[str, Any], mode: str, inflight: int, key: str) -> float | None:
    rounds = results.get("routing", {}).get("rounds", [])
    return median([x[key] for rd in rounds for x in rd.get(mode, {}).get("round_trips", [])
                   if x["inflight"] == inflight])


def _ev(results: dict[str, Any], mode: str, key: str) -> float | None:
    rounds = results.get("routing", {}).get("rounds", [])
    return median([rd[mode]["events"][key] for rd in rounds if mode in rd and "events" in rd[mode]])


def _rounds(results: dict[str, Any]) -> list[dict[str, Any]]:
    return list(results.get("routing", {}).get("rounds", [])) + list(
        results.get("autogen", {}).get("rounds", []))


def _ag(results: dict[str, Any], inflight: int, key: str) -> float | None:
    return median([x[key] for rd in _rounds(results) for x in rd.get("autogen", {}).get("round_trips", [])
                   if x["inflight"] == inflight])


def _round_ratio(results: dict[str, Any], a: str, b: str, inflight: int, key: str) -> float | None:
    """Median over rounds of a/b measured in the same round."""
    out = []
    for rd in _rounds(results):
        if a in rd and b in rd:
            va = [x[key] for x in rd[a]["round_trips"] if x["inflight"] == inflight]
            vb = [x[key] for x in rd[b]["round_trips"] if x["inflight"] == inflight]
            if va and vb and va[0] is not None and vb[0]:
                out.append(va[0] / vb[0])
    return median(out)


def _ev_ratio(results: dict[str, Any], key: str) -> float | None:
    out = [rd["orchgpt"]["events"][key] / rd["baseline"]["events"][key] for rd in _rounds(results)
           if "orchgpt" in rd and "baseline" in rd and rd["baseline"]["events"][key]]
    return median(out)


def _scale_step(results: dict[str, Any], mode: str, n: int) -> dict[str, Any] | None:
    for s in results.get("scale", {}).get(mode, {}).get("steps", []):
        if s["agents"] == n:
            return dict(s)
    return None


def build_rows(results: dict[str, Any], p: Profile) -> list[Row]:
    rows: list[Row] = []
    lo, hi = p.inflight[0], p.inflight[-1]
    has_ag = any("autogen" in rd for rd in _rounds(results))
    if "routing" in results:
        for n in (lo, hi):
            tgt = ("≥ 0.9× baseline", lambda r: r >= 0.9) if n == lo else ("—", None)
            for key, label, unit, t in (("rps", "round trips/s", "rt/s", tgt), ("p50_ms", "p50 latency", "ms", None),
                                        ("p99_ms", "p99 latency", "ms", None),
                                        ("router_cpu_us_per_rt", "router CPU per round trip", "µs", None)):
                rows.append(row(f"{label}, {n} in flight", _rt(results, "orchgpt", n, key),
                                _rt(results, "baseline", n, key), "relay", unit,
                                t[0] if t else "—", t[1] if t else None,
                                ratio_of=_round_ratio(results, "orchgpt", "baseline", n, key)))
    if has_ag:
        for n in (lo, hi):
            rows.append(row(f"round trips/s, {n} in flight, vs AutoGen",
                            _rt(results, "orchgpt", n, "rps"), _ag(results, n, "rps"), "AutoGen",
                            "rt/s", "≥ 1.5× AutoGen", lambda r: r >= 1.5, note=AUTOGEN_NOTE,
                            ratio_of=_round_ratio(results, "orchgpt", "autogen", n, "rps")))
        for key, label, unit in (("p50_ms", "p50 latency", "ms"), ("router_cpu_us_per_rt", "router CPU per round trip", "µs")):
            rows.append(row(f"{label}, {lo} in flight, vs AutoGen", _rt(results, "orchgpt", lo, key),
                            _ag(results, lo, key), "AutoGen", unit, note=AUTOGEN_NOTE,
                            ratio_of=_round_ratio(results, "orchgpt", "autogen", lo, key)))
    if "routing" in results:
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
            except Exception as exc:  # report, go on with the next phase
                reason = f"timed out after {caps[ph]:.0f}s" if isinstance(exc, TimeoutError) else str(exc)
                errors["autogen" if "AutoGen could not" in reason else ph] = f"{type(exc).__name__}: {reason}"
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
