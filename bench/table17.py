"""Issue 17's rows: durable echo tasks against a durable RabbitMQ queue, and tokens from 64 agents."""

from __future__ import annotations

from typing import Any

from bench import pyspy
from bench.phases import Profile
from bench.report import Row, median, row

RABBIT_NOTE = (
    "RabbitMQ (Debian's rabbitmq-server, started by the benchmark): durable queue, persistent 200-byte "
    "messages, publisher confirms awaited by N lanes, one consumer acking, aio-pika (bench/rabbit.py)"
)
TOKENS_NOTE = (
    "default settings; every delta's text is the time it was due by the emitters' schedule, a delay runs "
    "to the arrival of the (possibly coalesced) event holding it (bench/tokens.py)"
)


def _rabbit(results: dict[str, Any], n: int, key: str = "results") -> float | None:
    for r in results.get("rabbitmq", {}).get(key, []):
        if r["inflight"] == n:
            return float(r["per_s"])
    return None


PG_NOTE = (
    "the daemon on a PostgreSQL server (Debian's package) started for the phase, fsync on "
    "(bench/phases_pg.py); PostgreSQL CPU: the postmaster and its backends, from /proc"
)


STREAM = " via the submission stream"  # (the rows of the tasks on one SubmitStream call)


def task_rows(results: dict[str, Any], phase: str = "tasks", on_store: str = "", key: str = "results") -> list[Row]:
    """The durable echo task rows of ``phase`` ("tasks": SQLite; "tasks_pg": PostgreSQL, ``on_store``
    " on PostgreSQL"), each against the RabbitMQ phase of the same run; ``key`` "stream": the same
    load on one SubmitStream call (``on_store`` then says so)."""
    rows: list[Row] = []
    missing = results.get("rabbitmq", {}).get("missing")
    store_missing = results.get(phase, {}).get("missing")
    if store_missing:
        rows.append(row(f"durable echo tasks/s{on_store}", None, None, "", "/s", note=f"not run: {store_missing}"))
    runs = results.get(phase, {}).get(key, [])
    profiled = [r for r in runs if r.get("profile", {}).get("summary")]
    why = ""
    if profiled:
        why = pyspy.why_text(profiled[-1]["profile"]["summary"], f"{profiled[-1]['inflight']} in flight{on_store}")
    for r in runs:
        n = r["inflight"]
        base = _rabbit(results, n)
        note = f"no RabbitMQ baseline: {missing}" if missing else RABBIT_NOTE
        if phase == "tasks_pg":
            note = f"{PG_NOTE}; {note}"
        loop = _rabbit(results, n, "closed_loop")
        if loop is not None:
            note += f"; RabbitMQ with each lane also waiting for delivery: {loop:,.0f}/s"
        goal: float | None
        if n == 1:
            target, check, on, goal = "≥ 600/s", (lambda v: v >= 600), "value", 600.0
        elif n >= 64:
            target, check, on, goal = "≥ 3,000/s and ≥ 0.9× RabbitMQ", (lambda v: v >= 3000), "value", 3000.0
        else:
            target, check, on, goal = "—", None, "value", None
        one = row(
            f"durable echo tasks/s{on_store} (created, assigned, run, result stored), {n} in flight",
            r["tasks_per_s"],
            base,
            "RabbitMQ msg/s" if base is not None else "",
            "/s",
            target,
            check,
            on=on,
            note=note,
            goal=goal,
            why=why,
        )
        if n >= 64 and one.passed and one.ratio is not None and one.ratio < 0.9:
            one.passed, one.goal, one.subject = False, 0.9, one.ratio  # missed on the ratio to RabbitMQ
        rows.append(one)
        cpu = r.get("router_cpu_us_per_task")
        rows.append(
            row(
                f"daemon CPU per task{on_store}, {n} in flight",
                cpu,
                None,
                "",
                "µs",
                "< 300 µs" if n >= 64 else "—",
                (lambda v: v < 300) if n >= 64 else None,
                on="value",
                goal=300.0 if n >= 64 else None,
                lower_is_better=True,
                why=why,
            )
        )
        if r.get("pg_cpu_us_per_task") is not None:
            rows.append(row(f"PostgreSQL server CPU per task, {n} in flight", r["pg_cpu_us_per_task"], None, "", "µs"))
    return rows


def _tok(results: dict[str, Any], kind: str, mode: str, key: str) -> float | None:
    return median([rd[mode].get(key) for rd in results.get("tokens", {}).get(kind, []) if mode in rd])


def _tok_ratio(results: dict[str, Any], kind: str, key: str) -> float | None:
    return median(
        [
            rd["orchgpt"][key] / rd["baseline"][key]
            for rd in results.get("tokens", {}).get(kind, [])
            if rd.get("orchgpt", {}).get(key) is not None and rd.get("baseline", {}).get(key)
        ]
    )


def token_rows(results: dict[str, Any], p: Profile) -> list[Row]:
    tk = results.get("tokens")
    if not tk:
        return []
    n, rate = tk.get("agents", p.tok_agents), tk.get("rate", p.tok_rate)
    errs = "; ".join(tk.get("errors", []))
    note = TOKENS_NOTE + (f"; failed runs: {errs}" if errs else "")
    drop = [
        rd["orchgpt"]["error"] for k in ("max", "paced") for rd in tk.get(k, []) if "error" in rd.get("orchgpt", {})
    ]
    profiled = [
        rd["orchgpt"]["profile"]["summary"]
        for rd in tk.get("paced", [])
        if rd.get("orchgpt", {}).get("profile", {}).get("summary")
    ]
    why = pyspy.why_text(profiled[0], f"paced at {rate:,.0f}/s") if profiled else ""
    rows = [
        row(
            f"token deltas/s, {n} agents → 1 watcher, as fast as they go",
            _tok(results, "max", "orchgpt", "dps"),
            _tok(results, "max", "baseline", "dps"),
            "relay pump",
            "/s",
            f"≥ {rate:,.0f}/s, no watcher dropped",
            (lambda v: v >= rate and not drop),
            on="value",
            note=note,
            ratio_of=_tok_ratio(results, "max", "dps"),
        ),
        row(
            f"token deltas/s delivered, paced at {rate:,.0f}/s",
            _tok(results, "paced", "orchgpt", "dps"),
            _tok(results, "paced", "baseline", "dps"),
            "relay pump",
            "/s",
            f"≥ {rate * 0.98:,.0f}/s (the offered rate, 2% slack)",
            (lambda v: v >= rate * 0.98 and not drop),
            on="value",
            note=note,
            goal=rate * 0.98,
            why=why,
            ratio_of=_tok_ratio(results, "paced", "dps"),
        ),
    ]
    for key, label, target, check, goal in (
        ("p50_ms", "p50", "—", None, None),
        ("p99_ms", "p99", "< 50 ms", lambda v: v < 50, 50.0),
    ):
        rows.append(
            row(
                f"{label} delay of a token, agent → watcher, at {rate:,.0f}/s",
                _tok(results, "paced", "orchgpt", key),
                _tok(results, "paced", "baseline", key),
                "relay pump",
                "ms",
                target,
                check,
                on="value",
                note=note,
                ratio_of=_tok_ratio(results, "paced", key),
                goal=goal,
                lower_is_better=True,
                why=why,
            )
        )
    rows.append(
        row(
            "deltas per token event at the watcher, paced",
            _tok(results, "paced", "orchgpt", "deltas_per_event"),
            _tok(results, "paced", "baseline", "deltas_per_event"),
            "relay pump",
            "",
        )
    )
    for kind, label in (("max", "as fast as they go"), ("paced", f"paced at {rate:,.0f}/s")):
        rows.append(
            row(
                f"router busy, {label} (is the router the limit?)",
                _tok(results, kind, "orchgpt", "router_cpu_pct"),
                _tok(results, kind, "baseline", "router_cpu_pct"),
                "relay pump",
                "% core",
            )
        )
        peers = [
            (rd[m].get("emitters_cpu_pct") or 0) + (rd[m].get("watcher_cpu_pct") or 0)
            for rd in tk.get(kind, [])
            for m in ("orchgpt",)
            if m in rd and rd[m].get("emitters_cpu_pct") is not None
        ]
        rows.append(
            row(
                f"emitters + watcher CPU, {label} (they share one core)",
                median(peers),
                None,
                "",
                "% core",
            )
        )
    for kind, label in (("max", "as fast as they go"), ("paced", f"paced at {rate:,.0f}/s")):
        rows.append(
            row(
                f"router CPU per token delta, {label}",
                _tok(results, kind, "orchgpt", "router_cpu_us_per_delta"),
                _tok(results, kind, "baseline", "router_cpu_us_per_delta"),
                "relay pump",
                "µs",
                ratio_of=_tok_ratio(results, kind, "router_cpu_us_per_delta"),
            )
        )
    per_frame = {  # the agents fold their deltas (orchgpt/wire/token_fold.py): fewer frames in
        m: median(
            [rd[m]["sent"] / rd[m]["frames_out"] for rd in tk.get("paced", []) if rd.get(m, {}).get("frames_out")]
        )
        for m in ("orchgpt", "baseline")
    }
    rows.append(
        row(
            "deltas per agent frame into the router, paced",
            per_frame["orchgpt"],
            per_frame["baseline"],
            "relay pump",
            "",
        )
    )
    return rows


def problems(results: dict[str, Any]) -> list[str]:
    out = [f"tokens: {e}" for e in results.get("tokens", {}).get("errors", [])]
    for kind in ("max", "paced"):
        for rd in results.get("tokens", {}).get(kind, []):
            for mode, r in rd.items():
                if r.get("inconsistent"):
                    out.append(f"tokens {kind} {mode}: {r['inconsistent'][0]}")
                if "complete" in r and not r["complete"] and not r.get("stopped_after_window"):
                    out.append(f"tokens {kind} {mode}: {r['received']} of {r['expected']} deltas arrived")
    return out
