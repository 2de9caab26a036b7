"""Smoke tests of issue 17's benchmark phases (bench/rabbit.py, bench/tokens.py, bench/agents.py,
bench/table17.py): tiny counts, real processes, so that the bench code cannot rot. The figures are
not checked (a shared machine is too noisy), only that each phase measured something consistent."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import daemon, pyspy, rabbit, report, routing, table17, tlsdir, tokens
from bench.children import Children
from bench.phases import PROFILES

pytestmark = pytest.mark.timeout(60)


def test_task_rows_against_rabbitmq_and_its_absence() -> None:
    tasks = {"results": [{"inflight": 1, "tasks_per_s": 700.0}, {"inflight": 64, "tasks_per_s": 3300.0}]}
    rmq = {"results": [{"inflight": 1, "per_s": 2000.0}, {"inflight": 64, "per_s": 3500.0}], "closed_loop": []}
    rows = table17.task_rows({"tasks": tasks, "rabbitmq": rmq})
    one, sixty_four = rows[0], rows[2]
    assert (one.baseline, one.passed) == (2000.0, True)  # ≥ 600/s, whatever RabbitMQ does
    assert sixty_four.ratio == pytest.approx(3300 / 3500) and sixty_four.passed is True
    rmq["results"][1]["per_s"] = 4000.0  # 0.825×: above 3,000/s but under 0.9× RabbitMQ
    assert table17.task_rows({"tasks": tasks, "rabbitmq": rmq})[2].passed is False
    gone = table17.task_rows({"tasks": tasks, "rabbitmq": {"missing": "RabbitMQ is not installed"}})
    assert gone[2].baseline is None and "no RabbitMQ baseline: RabbitMQ is not installed" in gone[2].note


def test_task_rows_via_the_submission_stream() -> None:
    tasks = {
        "results": [{"inflight": 64, "tasks_per_s": 250.0, "router_cpu_us_per_task": 2600.0}],
        "stream": [{"inflight": 64, "tasks_per_s": 3100.0, "router_cpu_us_per_task": 280.0}],
    }
    rmq = {"results": [{"inflight": 64, "per_s": 3200.0}], "closed_loop": []}
    rows = table17.task_rows({"tasks": tasks, "rabbitmq": rmq}) + table17.task_rows(
        {"tasks": tasks, "rabbitmq": rmq}, on_store=table17.STREAM, key="stream"
    )
    assert [r.figure for r in rows] == [
        "durable echo tasks/s (created, assigned, run, result stored), 64 in flight",
        "daemon CPU per task, 64 in flight",
        "durable echo tasks/s via the submission stream (created, assigned, run, result stored), 64 in flight",
        "daemon CPU per task via the submission stream, 64 in flight",
    ]
    assert [r.passed for r in rows] == [False, False, True, True]


def test_token_rows_fail_when_the_watcher_was_dropped() -> None:
    ok = {"dps": 60_000.0, "p50_ms": 5.0, "p99_ms": 20.0, "deltas_per_event": 3.0, "router_cpu_us_per_delta": 9.0}
    res = {"tokens": {"agents": 64, "rate": 50_000.0, "max": [{"orchgpt": ok}], "paced": [{"orchgpt": ok}]}}
    rows = {r.figure.split(",")[0]: r for r in table17.token_rows(res, PROFILES["full"])}
    assert rows["token deltas/s"].passed and rows["p99 delay of a token"].passed
    res["tokens"]["paced"].append({"orchgpt": {"error": "RuntimeError: watcher dropped"}})
    rows = {r.figure.split(",")[0]: r for r in table17.token_rows(res, PROFILES["full"])}
    assert rows["token deltas/s"].passed is False


def test_tokens_paced_to_one_watcher_on_the_real_daemon(tmp_path: Path) -> None:
    async def go() -> dict[str, object]:
        certs = await asyncio.to_thread(tlsdir.make_certs, tmp_path / "certs", ["tk-0", "tk-1"])
        async with Children(tmp_path / "logs") as ch:
            router, _ = await daemon.start_orchgpt(ch, certs, tmp_path / "data", default_limits=True)
            return await tokens.run(
                ch,
                router,
                agents=2,
                rate=1000.0,
                seconds=1.0,
                warmup=0.2,
                duration=0.4,
                prefix="tk-",
                start_tasks=routing.task_starter(router),
            )

    r = asyncio.run(asyncio.wait_for(go(), 50))
    assert r["complete"] and r["received"] == 1000 and not r["inconsistent"], r
    assert r["deltas"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]  # type: ignore[operator]


def test_rabbitmq_baseline_measures_confirmed_messages_and_stops_its_broker() -> None:
    why = rabbit.missing_reason()
    if why:
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="bench-rmq-") as d:
        res = asyncio.run(asyncio.wait_for(rabbit.measure_all([1, 4], 0.1, 0.3, Path(d)), 55))
    for key in ("results", "closed_loop"):
        assert [r["inflight"] for r in res[key]] == [1, 4]
        assert all(r["messages"] > 0 and r["per_s"] > 0 for r in res[key]), res
    # the broker is gone: its node name is in no process's command line any more
    node = str(res["node"]).split("@")[0]
    procs = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p)]
    assert not any(node.encode() in c for c in procs)


def _readable(p: Path) -> bool:
    try:
        p.read_bytes()
        return True
    except OSError:
        return False


def test_agents_script_tiny_run(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "agents.json"
    cmd = [sys.executable, "-m", "bench.agents", "--steps", "6,12", "--procs", "2", "--modes", "orchgpt"]
    cmd += ["--idle-window", "0.5", "--settle", "0.2", "--step-timeout", "30", "--out", str(out)]
    proc = subprocess.run(
        cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=55, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| agents | router |" in proc.stdout
    steps = json.loads(out.read_text())["orchgpt"]["steps"]
    assert [s["agents"] for s in steps] == [6, 12]
    assert all(s["register_s"] > 0 and s["rss_mib"] > 10 and s["router_fds"] >= 12 for s in steps), steps


def test_task_rows_on_postgresql_and_its_absence() -> None:
    pg_res = {"results": [{"inflight": 64, "tasks_per_s": 1750.0, "pg_cpu_us_per_task": 120.0}]}
    rmq = {"results": [{"inflight": 64, "per_s": 3500.0}], "closed_loop": []}
    rows = table17.task_rows({"tasks_pg": pg_res, "rabbitmq": rmq}, "tasks_pg", " on PostgreSQL")
    assert rows[0].figure.startswith("durable echo tasks/s on PostgreSQL") and rows[0].ratio == pytest.approx(0.5)
    assert rows[0].passed is False and "PostgreSQL server (Debian's package)" in rows[0].note
    assert rows[2].figure == "PostgreSQL server CPU per task, 64 in flight" and rows[2].orchgpt == 120.0
    gone = table17.task_rows({"tasks_pg": {"missing": "PostgreSQL is not installed"}}, "tasks_pg", " on PostgreSQL")
    assert len(gone) == 1 and gone[0].orchgpt is None and "not run: PostgreSQL is not installed" in gone[0].note


def test_tasks_pg_phase_runs_on_a_real_postgresql_and_stops_it(tmp_path: Path) -> None:
    from dataclasses import replace

    from bench import pg
    from bench.phases import Ctx
    from bench.phases_pg import phase_tasks_pg

    why = pg.unavailable()
    if why:
        pytest.skip(why)
    prof = replace(PROFILES["smoke"], tasks_count=5, tasks_inflight=(1, 4))
    certs = tlsdir.make_certs(tmp_path / "certs", ["bench-a"])
    res = asyncio.run(asyncio.wait_for(phase_tasks_pg(Ctx(prof, tmp_path, certs, {})), 55))
    assert [r["inflight"] for r in res["results"]] == [1, 4]
    assert all(r["tasks"] == 5 and r["tasks_per_s"] > 0 and r["pg_cpu_us_per_task"] > 0 for r in res["results"]), res
    # the server is gone: its directory removed, no process runs from it
    assert not Path(res["server_dir"]).exists()
    procs = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p)]
    assert not any(res["server_dir"].encode() in c for c in procs)


def test_a_missed_target_says_by_how_much_and_why() -> None:
    profile = {"summary": pyspy.summarize(SAMPLE_RAW, rate=100)}
    tasks = {
        "results": [
            {"inflight": 1, "tasks_per_s": 150.0, "router_cpu_us_per_task": 2500.0},
            {"inflight": 64, "tasks_per_s": 600.0, "router_cpu_us_per_task": 1200.0, "profile": profile},
        ]
    }
    rows = table17.task_rows({"tasks": tasks, "rabbitmq": {"missing": "not run"}})
    text = report.markdown(rows)
    assert "| FAIL by 75 % [" in text  # 150/s of 600/s
    assert "| FAIL by 80 % [" in text  # 600/s of 3,000/s
    assert "| FAIL: 4.0× the target [" in text  # 1,200 µs against < 300 µs
    why = [line for line in text.splitlines() if line.startswith("[") and "py-spy of the daemon" in line]
    assert len(why) == 1 and "(64 in flight)" in why[0], text
    assert "gRPC's poller thread (C core) 40 %" in why[0] and "store commits 20 %" in why[0], why[0]
    # a row that passes carries no why; nor does a failed one without a profile
    fast = {"results": [{"inflight": 1, "tasks_per_s": 700.0}, {"inflight": 64, "tasks_per_s": 100.0}]}
    text = report.markdown(table17.task_rows({"tasks": fast, "rabbitmq": {"missing": "not run"}}))
    assert "py-spy" not in text and "| pass |" in text and "| FAIL by 97 % |" in text


# a raw py-spy profile: the poller thread, idle epoll, a group commit, mesh code
SAMPLE_RAW = "\n".join(
    [
        "_bootstrap (threading.py:1002);Thread.run (threading.py:982) 40",
        "run (asyncio/runners.py:190);_run_once (asyncio/base_events.py:1922);"
        "EpollSelector.select (selectors.py:468) 900",
        "run (asyncio/runners.py:190);GroupCommit._tick (orchgpt/store/group_commit.py:176);"
        "GroupCommit.commit (orchgpt/store/group_commit.py:199) 20",
        "run (asyncio/runners.py:190);Handle._run (asyncio/events.py:80) 25",
        "run (asyncio/runners.py:190);Mesh.submit (orchgpt/mesh.py:241);Mesh._publish (orchgpt/mesh.py:369) 15",
    ]
)


def test_pyspy_summary_counts_busy_samples_only() -> None:
    s = pyspy.summarize(SAMPLE_RAW)
    assert s is not None and s["samples"] == 1000 and s["busy_samples"] == 100
    assert s["categories"] == {
        "gRPC's poller thread (C core)": 40.0,
        "gRPC and asyncio native code (per message)": 25.0,
        "store commits": 20.0,
        "mesh logic (orchgpt Python)": 15.0,
    }
    assert s["top_self"][0] == ("gRPC's poller thread", 40.0)
    assert pyspy.summarize("run (asyncio/runners.py:190);EpollSelector.select (selectors.py:468) 10") is None


@pytest.mark.skipif(shutil.which("py-spy") is None, reason="py-spy is not installed")
def test_daemon_profile_records_a_real_process(tmp_path: Path) -> None:
    """py-spy attached to a real busy Python process: a summary naming its hot function."""
    code = "import time\ndef spin():\n    while True:\n        sum(range(1000))\nspin()\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:

        async def go() -> pyspy.DaemonProfile:
            async with pyspy.DaemonProfile(proc.pid, tmp_path / "p.raw") as prof:
                await asyncio.sleep(1.5)
            return prof

        prof = asyncio.run(go())
    finally:
        proc.kill()
        proc.wait(10)
    assert prof.summary is not None, prof.error
    assert prof.summary["busy_samples"] > 20
    assert any("spin" in f for f, _ in prof.summary["top_self"]), prof.summary
    off = pyspy.profile_if(False, proc.pid, tmp_path / "q.raw")
    assert asyncio.run(_enter_exit(off)).result() == {"error": "not profiled"}


async def _enter_exit(prof: pyspy.DaemonProfile) -> pyspy.DaemonProfile:
    async with prof:
        pass
    return prof
