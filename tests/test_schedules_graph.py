"""Issue 14's third "done when", through the real CLI: a schedule every 5 seconds
(`* * * * * */5`) on the echo-pipeline graph fires and its graph runs succeed; the daemon is
stopped over more than two ticks and started again; the schedule fires ONCE for the missed
period, then on time; `/schedule show ID` shows it all."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchgpt.schedules import CATCH_UP_RUN, ON_TIME, SUBMITTED, Schedule, ScheduleRun
from tests.support.mesh import Daemon, await_for
from tests.support.stores import daemon_store

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/graphs/echo-pipeline.json"
PERIOD_MS = 5000
OUTPUT = {"order": "42", "said": "hello mesh, order 42 is ready"}


def cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update(
        {
            "ORCHGPT_ADDRESS": d.address,
            "ORCHGPT_CERTS": str(d.certs),
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "250",
        }
    )
    r = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r


async def _history(d: Daemon, sid: str) -> tuple[Schedule, list[ScheduleRun]]:
    """The schedule and its runs, oldest first (each with its task's state)."""
    async with d.client() as c:
        s, runs = await c.get_schedule(sid, history=100)
    return s, sorted(runs, key=lambda r: r.tick_ms)


def _succeeded(runs: list[ScheduleRun]) -> list[ScheduleRun]:
    return [r for r in runs if r.state == SUBMITTED and r.task_state == "succeeded"]


async def test_graph_schedule_survives_a_restart_with_one_catch_up(daemon_factory) -> None:
    d: Daemon = daemon_factory().start()
    made = cli(d, "-c", f"/graph create {EXAMPLE}")
    gid = made.stdout.split()[0]
    assert "echo-pipeline: created" in made.stdout, made.stdout
    added = cli(d, "--json", "-c", f"/schedule add '* * * * * */5' {gid} '{{}}'")
    s = json.loads(added.stdout.splitlines()[-1])["schedule"]
    sid = s["schedule_id"]
    assert s["command"]["agent_type"] == "graph" and s["command"]["options"] == {"graph_id": gid}
    assert s["next_run_ms"] % PERIOD_MS == 0

    async def first_run_done() -> bool:
        return bool(_succeeded((await _history(d, sid))[1]))

    await await_for(first_run_done, 30, 0.2, what="a scheduled graph run that succeeds")
    # stop the daemon just before a tick, so that the downtime covers three ticks soon
    nxt = (await _history(d, sid))[0].next_run_ms
    await asyncio.sleep(max(0.0, (nxt - time.time() * 1000 - 800) / 1000))
    d.stop()
    store = daemon_store(d)
    last_before = max(r.tick_ms for r in store.schedule_runs(sid, 100))
    missed_from = store.get_schedule(sid).next_run_ms  # type: ignore[union-attr]
    store.close()
    # down over the next three ticks at least: more than two periods missed
    await asyncio.sleep(max(0.0, (missed_from + 2 * PERIOD_MS + 700 - time.time() * 1000) / 1000))
    d.start()

    async def caught_up_then_on_time() -> bool:
        runs = [r for r in (await _history(d, sid))[1] if r.tick_ms > last_before]
        return len(_succeeded(runs)) >= 2

    await await_for(caught_up_then_on_time, 30, 0.2, what="a catch-up run, then one on time")
    sched, runs = await _history(d, sid)
    old = [r for r in runs if r.tick_ms <= last_before]
    new = [r for r in runs if r.tick_ms > last_before]
    assert _succeeded(old) and all(r.kind == ON_TIME for r in old), old
    catch_up, *on_time = new
    # ONE run for the missed period (three ticks or more), not one per missed tick
    assert catch_up.kind == CATCH_UP_RUN and catch_up.missed_from_ms == missed_from, new
    assert catch_up.tick_ms - missed_from >= 2 * PERIOD_MS, catch_up
    assert [r.kind for r in new].count(CATCH_UP_RUN) == 1, new
    # then on time, every period
    assert on_time and all(r.kind == ON_TIME for r in on_time), new
    ticks = [catch_up.tick_ms] + [r.tick_ms for r in on_time]
    assert all(b - a == PERIOD_MS for a, b in itertools.pairwise(ticks)), ticks
    assert all(r.fired_ms - r.tick_ms < PERIOD_MS for r in on_time), on_time
    assert _succeeded([catch_up]) and _succeeded(on_time[:1]), new
    # each run is a run of the graph as the schedule's owner, all three nodes completed
    async with d.client() as c:
        for r in [old[0], catch_up, on_time[0]]:
            task, _, _ = await c.get_task(r.task_id, with_events=False)
            assert task.agent_type == "graph" and task.submitted_by == "client:cli", task
            assert task.result is not None and json.loads(task.result.output) == OUTPUT
            assert task.result.data["graph_id"] == gid, task.result.data
            nodes = json.loads(task.result.data["nodes"])
            assert [(n["node"], n["state"]) for n in nodes] == [
                ("greet", "completed"),
                ("say", "completed"),
                ("find", "completed"),
            ]
    # the history, as the user sees it
    text = cli(d, "-c", f"/schedule show {sid}").stdout
    ids = [r.task_id for r in runs]
    rows = {ln.split()[-1]: ln for ln in text.splitlines() if ln.endswith(tuple(ids))}
    assert "catch_up" in rows[catch_up.task_id] and "succeeded" in rows[catch_up.task_id], text
    assert all("on_time" in rows[r.task_id] for r in [*old, *on_time]), text
    assert sched.runs == len(runs) and gid in text and "runs " in text, text
