"""The command line of the crash-recovery scenario (bench/crash_recovery.py): run it for each mode
and kind of kill asked for, print the counts.

    python -m bench.crash_recovery [--kill daemon|agents|both|cut|window|all] [--commit-window-ms MS]
                                   [--store sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import pg
from bench.crash_processes import ScenarioError
from bench.crash_recovery import KILLS, run


def main(argv: list[str] | None = None) -> int:
    from bench import crash_recovery

    ap = argparse.ArgumentParser(
        description=crash_recovery.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.3, help="seconds each echo task takes")
    ap.add_argument(
        "--mode",
        choices=["remote", "local", "both"],
        default="both",
        help="remote: hand-started agents that outlive the daemon; local: agents it spawns",
    )
    ap.add_argument(
        "--kill",
        choices=[*KILLS, "all"],
        default="daemon",
        help="what is killed: the daemon, the (remote) agents, both together, or the agents' "
        "streams cut again and again; window: the daemon inside a group-commit window while "
        "submissions arrive; all: each in turn",
    )
    ap.add_argument(
        "--commit-window-ms",
        type=float,
        help="the daemon's --commit-window-ms (default: its own; --kill window: 50, every window held open)",
    )
    ap.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the daemon's store: SQLite in its data directory, or a database on a throwaway PostgreSQL "
        "server with fsync on (bench/pg.py; run from the repository's root)",
    )
    ap.add_argument("--workdir", help="keep certificates, data and logs here (default: a temporary directory)")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args(argv)
    modes = ["remote", "local"] if args.mode == "both" else [args.mode]
    kills = list(KILLS) if args.kill == "all" else [args.kill]
    runs = [(m, k) for k in kills for m in modes if k in ("daemon", "window") or m == "remote"]
    if not runs:
        ap.error(f"--kill {args.kill} needs remote agents (--mode remote or both)")
    ok = True
    server = None
    if args.store == "postgresql":
        why = pg.unavailable()
        if why:
            ap.error(f"--store postgresql: {why}")
        server = asyncio.run(pg.start())
    try:
        ok = _runs(args, runs, server)
    finally:
        if server is not None:
            asyncio.run(pg.stop(server))
    return 0 if ok else 1


def _runs(args: argparse.Namespace, runs: list[tuple[str, str]], server: Any) -> bool:
    ok = True
    for mode, kill in runs:
        with tempfile.TemporaryDirectory(prefix="orchgpt-crash-") as tmp:
            work = Path(args.workdir) / f"{mode}-{kill}" if args.workdir else Path(tmp)
            try:
                c = asyncio.run(
                    run(
                        work,
                        args.tasks,
                        args.agents,
                        args.delay,
                        mode,
                        kill=kill,
                        commit_window_ms=args.commit_window_ms,
                        store_url=server.new_database() if server is not None else None,
                    )
                )
            except ScenarioError as exc:
                print(f"{mode}: could not run the scenario: {exc}", file=sys.stderr)
                ok = False
                continue
        ok = ok and c.ok
        if args.json:
            print(json.dumps({**asdict(c), "accounted": c.accounted, "ok": c.ok}))
            continue
        what = {
            "daemon": "SIGKILL of the daemon",
            "agents": "SIGKILL of every agent",
            "both": "SIGKILL of the daemon and every agent",
            "cut": f"{c.cuts} cuts of every agent's stream",
            "window": f"SIGKILL of the daemon inside a commit window ({c.unacknowledged_at_kill} not yet answered)",
        }[kill]
        print(
            f"== crash recovery ({mode} agents, {what}, {args.store} store): after {c.finished_before_kill} "
            f"of {c.submitted} finished; the restarted daemon recovered {c.recovered_by_daemon} unfinished tasks"
        )
        rows = [
            ("submitted", c.submitted),
            ("acknowledged", c.acknowledged),
            ("succeeded", c.succeeded),
            ("failed with a reason", c.failed_with_reason),
            ("lost", c.lost),
            ("unfinished", c.unfinished),
            ("run twice (RESULT events in the store)", c.completed_twice),
            ("run twice (finished twice in agents)", c.executed_twice),
            ("requeued after the crash", c.requeued),
            ("resubmitted ids that ran again", f"{c.resubmit_reran} of {c.resubmitted}"),
            ("seconds from restart to all terminal", c.seconds_to_recover),
        ]
        for label, value in rows:
            print(f"  {label:40} {value}")
        for f in c.failures[:10]:
            print(f"  failed: {f}")
        for n in c.notes:
            print(f"  note: {n}")
        print("  OK" if c.ok else "  FAILED: " + "; ".join(c.problems))
    return ok


if __name__ == "__main__":
    sys.exit(main())
