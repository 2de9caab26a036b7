"""Smoke run of the benchmark harness (bench/): tiny N, real processes, real TLS.

It proves that `python -m bench.run` still works end to end against the real
daemon and the baseline relay; the figures themselves are not checked (a
shared CI machine is too noisy for timed assertions), only that every phase
measured something sensible. AutoGen is left out: it installs its own
virtualenv from the package index.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.stats import percentile

REPO = Path(__file__).resolve().parent.parent


def test_percentile_and_rows() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0], 99) == 2.0
    assert math.isnan(percentile([], 50))
    ok = report.row("rt/s", 95.0, 100.0, "relay", "rt/s", "≥ 0.9×", lambda r: r >= 0.9)
    bad = report.row("rt/s", 80.0, 100.0, "relay", "rt/s", "≥ 0.9×", lambda r: r >= 0.9)
    mem = report.row("RSS", 250.0, 50.0, "relay", "MiB", "< 200 MB", lambda v: v < 200, on="value")
    none = report.row("x", None, 1.0, "relay", "")
    assert (ok.ratio, ok.passed, bad.passed, mem.passed, none.ratio) == (0.95, True, False, False, None)
    table = report.markdown([ok, bad, none])
    assert table.splitlines()[0] == "| figure | orchgpt | baseline | ratio | target | pass |"
    assert "| FAIL |" in table and "| pass |" in table and "n/a" in table


@pytest.mark.timeout(300)
def test_bench_run_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench.run", "--profile", "smoke", "--skip", "autogen"),
            *("--skip", "rabbitmq", "--skip", "tasks_pg", "--skip", "tokens"),  # tests/test_bench_issue17.py
            *("--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "| figure | orchgpt | baseline | ratio | target | pass |" in proc.stdout
    assert "Machine:" in proc.stdout and "grpcio" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert doc["phases"] == ["routing", "scale", "startup", "tasks"]
    rows = {r["figure"]: r for r in doc["table"]}

    # routing: both routers carried round trips and events, over the same TLS
    for fig in ("round trips/s, 1 in flight", "round trips/s, 8 in flight"):
        assert rows[fig]["orchgpt"] > 0 and rows[fig]["baseline"] > 0, rows[fig]
        assert rows[fig]["ratio"] == pytest.approx(rows[fig]["orchgpt"] / rows[fig]["baseline"])
    routing = doc["results"]["routing"]
    for mode in ("baseline", "orchgpt"):
        rts = routing["round_trips"][mode]
        assert [r["inflight"] for r in rts] == [1, 8]
        for rt in rts:
            assert rt["round_trips"] > 0 and 0 < rt["p50_ms"] <= rt["p99_ms"]
            assert rt["router_cpu_us_per_rt"] is not None
        assert routing["events"][0][mode]["events"] > 0
    # the baseline pump is one envelope per frame; orchgpt may pack several
    assert routing["events"][0]["baseline"]["events_per_frame"] == 1.0
    assert routing["events"][0]["orchgpt"]["events_per_frame"] >= 1.0

    # scale: 10 agents with their own certificates registered on both routers
    for mode in ("baseline", "orchgpt"):
        steps = doc["results"]["scale"][mode]["steps"]
        assert [s["agents"] for s in steps] == [10], doc["results"]["scale"][mode]
        assert steps[0]["rss_mib"] > 10 and steps[0]["register_s"] > 0

    # start-up and tasks: a local echo agent was spawned and ran checked, stored tasks
    assert rows["spawn-to-ready of a local agent"]["orchgpt"] > 0
    assert rows["CLI start-to-prompt"]["orchgpt"] > 0 and rows["CLI start-to-prompt"]["baseline"] > 0
    tasks = doc["results"]["tasks"]["results"]
    assert [t["inflight"] for t in tasks] == [1, 4]
    assert all(t["tasks"] == 10 and t["checked_stored"] == 10 for t in tasks)
    # and the same on one SubmitStream call (its own rows)
    streamed = doc["results"]["tasks"]["stream"]
    assert [(t["inflight"], t["submit"]) for t in streamed] == [(1, "stream"), (4, "stream")]
    assert all(t["tasks"] == 10 and t["checked_stored"] == 10 for t in streamed)
    assert rows["daemon CPU per task via the submission stream, 4 in flight"]["orchgpt"] > 0


@pytest.mark.timeout(60)
def test_event_hotpath_micro_benchmark_runs() -> None:
    import asyncio

    from bench.event_hotpath import run_once

    assert asyncio.run(run_once(tokens=500, batch=64, watchers=2)) > 0


@pytest.mark.timeout(60)
def test_task_hotpath_micro_benchmark_runs() -> None:
    import asyncio

    from bench.task_hotpath import run_once

    assert asyncio.run(run_once(tasks=50, trace=False)) > 0
