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
- rabbitmq: the durable-queue baseline of the task rows: a RabbitMQ broker started here
  (Debian's rabbitmq-server), durable queue, publisher confirms, aio-pika (bench/rabbit.py);
- tasks: echo tasks per second through create, assign, complete and stored (1 and 64 in flight);
- tasks_pg: the same on the PostgreSQL store, a throwaway server started for it (bench/phases_pg.py);
- tokens: 64 streaming agents to one watcher at the default settings: deltas/s, and the p99
  delay of a delta from its agent to the watcher, paced at 50,000/s (bench/tokens.py).

Separate scripts (too long for this run): `python -m bench.agents` (10,000 and 20,000 idle
agents), `python -m bench.crash_recovery`, `python -m bench.event_hotpath`, `python -m bench.task_hotpath`.
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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import placement, report, tlsdir
from bench.children import raise_fd_limit
from bench.machine import machine_info
from bench.phases import (
    PROFILES,
    Ctx,
    _log,
    phase_autogen,
    phase_caps,
    phase_routing,
    phase_scale,
    phase_startup,
    phase_tasks,
)
from bench.phases17 import phase_rabbitmq, phase_tokens, token_cert_names
from bench.phases_pg import phase_tasks_pg
from bench.table import _problems, build_rows

PHASES = ("routing", "autogen", "scale", "startup", "rabbitmq", "tasks", "tasks_pg", "tokens")


PHASE_FNS: dict[str, Callable[[Ctx], Awaitable[dict[str, Any]]]] = {
    "routing": phase_routing,
    "autogen": phase_autogen,
    "scale": phase_scale,
    "startup": phase_startup,
    "rabbitmq": phase_rabbitmq,
    "tasks": phase_tasks,
    "tasks_pg": phase_tasks_pg,
    "tokens": phase_tokens,
}


# ---------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> int:
    p = PROFILES[args.profile]
    if args.tasks_inflight:
        p = replace(p, tasks_inflight=tuple(int(x) for x in args.tasks_inflight.split(",")))
    if args.tasks_count:
        p = replace(p, tasks_count=args.tasks_count)
    if args.tasks_agents:
        p = replace(p, tasks_agents=args.tasks_agents)
    if args.tasks_concurrency:
        p = replace(p, tasks_concurrency=args.tasks_concurrency)
    phases = [ph for ph in PHASES if ph not in set(args.skip or []) and (not args.only or ph in args.only)]
    placement.pin_self_to_peers()
    raise_fd_limit()
    info = machine_info()
    work = Path(tempfile.mkdtemp(prefix="orchgpt-bench-"))
    names = ["bench-a", "bench-b", *[f"bench-tok-{i}" for i in range(p.ev_agents)], *token_cert_names(p.tok_agents)]
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
    print(
        f"Profile {p.name}; total {time.monotonic() - t_all:.0f}s "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())})."
    )
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
        "machine": info,
        "placement": place,
        "profile": asdict(p),
        "phases": phases,
        "seconds": seconds,
        "total_seconds": time.monotonic() - t_all,
        "errors": errors,
        "problems": problems,
        "table": [r.as_dict() for r in rows],
        "table_markdown": table,
        "results": results,
        "logs": str(work / "logs") if keep else None,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"JSON: {out}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        dest="profile",
        action="store_const",
        const="quick",
        help="one round, shorter runs, 1,000 agents at most (about 2 minutes)",
    )
    ap.add_argument("--profile", choices=sorted(PROFILES), help="full (default), quick or smoke (CI)")
    ap.add_argument("--out", default="bench/results/latest.json", help="where to write the JSON ('' for none)")
    ap.add_argument("--skip", action="append", choices=PHASES, help="leave out a phase (repeatable)")
    ap.add_argument("--only", action="append", choices=PHASES, help="run only these phases (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (certificates, logs)")
    ap.add_argument("--tasks-inflight", help="the tasks phase's in-flight counts, e.g. 1,64 (default: the profile's)")
    ap.add_argument("--tasks-count", type=int, help="echo tasks per in-flight count (default: the profile's)")
    ap.add_argument("--tasks-agents", type=int, help="echo agents the daemon may spawn for the tasks phase (default 1)")
    ap.add_argument(
        "--tasks-concurrency",
        type=int,
        help="tasks each echo agent of the tasks phase runs at once (default 64; 1: one at a time, as before)",
    )
    ap.set_defaults(profile="full")
    args = ap.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
