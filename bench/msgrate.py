"""The daemon's heartbeat traffic, counted: its envelope counters by type (orchgpt's /metrics,
``orchgpt_envelopes_{in,out}_total``) read before and after a window. Deterministic and
independent of the machine's load, unlike CPU: a count of what the daemon had to handle."""

from __future__ import annotations

import re
import urllib.request

_LINE = re.compile(r'^orchgpt_envelopes_(in|out)_total\{type="([A-Z_]+)"\}\s+([0-9.e+]+)$', re.M)
# what idle agents cost in messages: PINGs out, the agents' HEARTBEATs, PINGs and PONGs in
IDLE_KINDS = (("out", "PING"), ("out", "PONG"), ("in", "HEARTBEAT"), ("in", "PING"), ("in", "PONG"))


def counts(port: int) -> dict[str, float]:
    """{"out PING": n, "in HEARTBEAT": n, ...} from the daemon's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f"{d} {t}": float(v) for d, t, v in _LINE.findall(text)}


def rates(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Messages per second of each idle kind over the window, and their sum ("idle total")."""
    out = {f"{d} {t}": (after.get(f"{d} {t}", 0.0) - before.get(f"{d} {t}", 0.0)) / seconds for d, t in IDLE_KINDS}
    out["idle total"] = sum(out.values())
    return out
