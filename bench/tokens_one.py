"""One run of the tokens benchmark against a fresh daemon at its defaults, optionally profiled.

    python -m bench.tokens_one [--rate 50000] [--agents 64] [--seconds 4] [--pyspy OUT.txt]
        [--daemon-arg=--some-flag ...]

The same run as one round of ``python -m bench.run --only tokens`` (bench/tokens.py: 64
emitters in one process, one watcher in another, the daemon pinned to its core), for profiling
and for comparing CPU per delta of two versions of the code in the same minute. With
``--pyspy`` a ``py-spy record --format raw`` of the daemon covers the run (a folded-stack text
file: ``sort -t' ' -k2 -n`` or flamegraph.pl read it). Prints the watcher's result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import daemon, placement, routing, tlsdir, tokens
from .children import Children


async def one(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-tok1-"))
    names = [f"tk-{i}" for i in range(args.agents)]
    certs = await asyncio.to_thread(tlsdir.make_certs, work / "certs", names)
    spy: asyncio.subprocess.Process | None = None
    try:
        async with Children(work / "logs") as ch:
            router, _ = await daemon.start_orchgpt(
                ch, certs, work / "data", default_limits=True, extra=list(args.daemon_arg or []), src=args.daemon_src
            )
            if args.pyspy:
                spy = await asyncio.create_subprocess_exec(
                    *("py-spy", "record", "--nonblocking", "--format", "raw", "-r", "200", "-o", args.pyspy),
                    *("--pid", str(router.pid), "-d", str(int(args.seconds + 8))),
                    *(("--idle",) if args.pyspy_idle else ()),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            return await tokens.run(
                ch,
                router,
                agents=args.agents,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                duration=args.duration,
                prefix="tk-",
                start_tasks=routing.task_starter(router),
                fold=not args.no_fold,
                linger_ms=args.linger_ms,
                linger_max_ms=args.linger_max_ms,
            )
    finally:
        if spy is not None:
            try:
                await asyncio.wait_for(spy.wait(), 30)
            except TimeoutError:
                spy.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50_000.0, help="deltas/s in all (0: as fast as they go)")
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--no-fold", action="store_true", help="the emitters send one envelope per delta")
    ap.add_argument("--linger-ms", type=float, help="the emitters' token linger (default: agentd's)")
    ap.add_argument("--linger-max-ms", type=float, help="the emitters' adaptive linger bound (default: agentd's)")
    ap.add_argument("--pyspy", default="", help="write a py-spy raw profile of the daemon here")
    ap.add_argument("--pyspy-idle", action="store_true", help="py-spy: idle samples too (where the loop waits)")
    ap.add_argument("--daemon-src", type=Path, help="run the orchgpt of this checkout (old code against new)")
    ap.add_argument("--daemon-arg", action="append", help="an extra `orchgpt serve` argument (repeatable)")
    args = ap.parse_args()
    placement.pin_self_to_peers()
    res = asyncio.run(asyncio.wait_for(one(args), args.seconds * 6 + 200))
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
