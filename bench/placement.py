"""Where processes run: the router alone on one core, everything else on the other.

On a 2-core machine the router (baseline relay, orchgpt daemon, AutoGen host)
is pinned to CPU 0 and the peers, clients and this harness to CPU 1, so the
router's CPU is measured alone and the peers never steal its core. With one
core nothing is pinned; with more, the router keeps CPU 0 and the rest share
the others.
"""

from __future__ import annotations

import contextlib
import os


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


_ALL = _cpus()
ALL_CPUS: set[int] = set(_ALL)
ROUTER_CPUS: set[int] | None = {_ALL[0]} if len(_ALL) >= 2 else None
PEER_CPUS: set[int] | None = set(_ALL[1:]) if len(_ALL) >= 2 else None


def describe() -> str:
    if ROUTER_CPUS is None:
        return "one CPU: nothing pinned (router and peers share it)"
    return f"router pinned to CPU {sorted(ROUTER_CPUS)}, peers/clients/harness to CPU {sorted(PEER_CPUS or [])}"


def pin_self_to_peers() -> None:
    if PEER_CPUS:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, PEER_CPUS)
