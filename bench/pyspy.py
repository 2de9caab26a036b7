"""A py-spy profile of a benchmark's daemon while a phase measures it, summed up for the table.

A row that misses its target says why; the why is this profile: where the daemon's samples went
(gRPC's native code and poller thread, the mesh's own Python, the store, its commits, logging),
and its busiest frames. ``async with DaemonProfile(pid, out) as prof`` records with
``py-spy record --nonblocking`` (the daemon is never paused) until the block ends;
``prof.summary`` is then a dict the phase stores with its results (``None`` without py-spy).

    python -m bench.pyspy PROFILE.raw     # the same summary of a raw py-spy file
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 100  # samples a second: enough for a 10 s phase, light on the machine

# (category, predicate on the sample's frames, outermost first); the first match wins
IDLE_SELF = ("EpollSelector.select", "select (selectors.py", "_run_once (asyncio/base_events.py:1884)")


def _category(frames: list[str]) -> str:
    leaf = frames[-1]
    joined = ";".join(frames)
    if leaf.startswith("Thread.run (threading.py"):  # a thread whose target is native: gRPC's poller
        return "gRPC's poller thread (C core)"
    if leaf.startswith(IDLE_SELF):
        return "idle (epoll wait)"
    if "Connection.wait" in joined or "psycopg" in leaf:
        return "PostgreSQL round trips (psycopg)"
    if "GroupCommit.commit" in leaf or (".commit (" in leaf and "sqlite" in joined):
        return "store commits"
    if "structlog" in leaf or "logs.py" in leaf or ("json/encoder" in leaf and "structlog" in joined):
        return "logging"
    if "orchgpt/store/" in leaf or "artifact_db" in leaf:
        return "store writes (Python)"
    if leaf.startswith(("Handle._run", "AgentStreams.Connect", "_guard_server_stream", "Relay.")) or "grpc" in leaf:
        return "gRPC and asyncio native code (per message)"
    if "orchgpt/" in leaf or "agentd/" in leaf:
        return "mesh logic (orchgpt Python)"
    return "other Python (asyncio, protobuf, stdlib)"


def summarize(raw: str, top: int = 5, rate: int | None = None) -> dict[str, Any] | None:
    """Categories and busiest frames of a py-spy ``--format raw`` profile (one ``stack count`` a line)."""
    cats: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        count = int(n)
        total += count
        cat = _category(frames)
        cats[cat] += count
        if cat.startswith("gRPC's poller"):
            selfs["gRPC's poller thread"] += count
        elif not cat.startswith("idle"):
            selfs[frames[-1]] += count
    busy = total - cats.get("idle (epoll wait)", 0)
    if busy <= 0:
        return None
    return {
        "samples": total,
        "rate": rate,
        "busy_samples": busy,
        "categories": {k: round(100 * v / busy, 1) for k, v in cats.most_common() if not k.startswith("idle")},
        "top_self": [(f, round(100 * c / busy, 1)) for f, c in selfs.most_common(top)],
    }


def why_text(summary: dict[str, Any] | None, label: str = "", who: str = "the daemon") -> str:
    """One sentence for a table's footnote: where a daemon's busy samples went."""
    if not summary:
        return ""
    cats = ", ".join(f"{k} {v:.0f} %" for k, v in summary["categories"].items() if v >= 2)
    tops = "; ".join(f"{f.split(' (')[0]} {p:.0f} %" for f, p in summary["top_self"][:3])
    where = f" ({label})" if label else ""
    at = f" at {summary['rate']}/s" if summary.get("rate") else ""
    return (
        f"py-spy of {who}{where}, {summary['busy_samples']:,} busy samples{at}: {cats}. Busiest frames (self): {tops}"
    )


class DaemonProfile:
    """Record ``pid`` with py-spy while the block runs; ``summary`` afterwards (None when py-spy is
    missing or failed: a profile is an explanation, never a reason for a phase to fail)."""

    def __init__(self, pid: int, out: Path, max_seconds: float = 600.0) -> None:
        self.pid, self.out, self.max_seconds = pid, out, max_seconds
        self.summary: dict[str, Any] | None = None
        self.error = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._skip = False

    def result(self) -> dict[str, Any]:
        """What a phase stores: the summary, or why there is none."""
        return {"summary": self.summary} if self.summary else {"error": self.error}

    async def __aenter__(self) -> DaemonProfile:
        if self._skip:
            return self
        exe = shutil.which("py-spy")
        if exe is None:
            self.error = "py-spy not installed"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(self.out)]
        argv += ["-d", str(int(self.max_seconds)), "-p", str(self.pid)]
        self._proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            self.error = "py-spy did not stop within 30 s"
            return
        if self.out.exists():
            self.summary = summarize(self.out.read_text(errors="replace"), rate=RATE)
        if self.summary is None:
            self.error = (err or b"").decode(errors="replace").strip()[-300:] or "py-spy wrote no samples"


def profile_if(on: bool, pid: int, out: Path) -> DaemonProfile:
    """A DaemonProfile that records only when ``on`` (the phase's largest load, say)."""
    prof = DaemonProfile(pid, out)
    if not on:
        prof.error = "not profiled"
        prof._skip = True
    return prof


def main() -> None:
    for name in sys.argv[1:]:
        s = summarize(Path(name).read_text(errors="replace"), top=15)
        print(why_text(s, name) if s else f"{name}: no samples")
        for f, p in (s or {}).get("top_self", []):
            print(f"  {p:5.1f} %  {f}")


if __name__ == "__main__":
    main()
