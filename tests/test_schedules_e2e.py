"""Schedules on a real daemon (issue 14): a 6-field cron fires an echo command on time, survives
a restart with ONE catch-up run for the missed period, then fires on time again; the history
shows it. Owner scoping and refusals over real mutual-TLS gRPC."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest

from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, TaskState
from orchgpt.schedules import CATCH_UP_RUN, ON_TIME, SUBMITTED, ScheduleRun, run_task_id
from tests.support.mesh import Daemon, await_for, issue
from tests.support.stores import daemon_store

pytestmark = pytest.mark.timeout(90)

EVERY_2S = "* * * * * */2"  # croniter's sixth field: seconds


async def _runs(d: Daemon, sid: str) -> list[ScheduleRun]:
    async with d.client() as c:
        _, runs = await c.get_schedule(sid, history=100)
    return sorted(runs, key=lambda r: r.tick_ms)


async def test_fires_on_time_catches_up_once_after_downtime_then_on_time(daemon_factory) -> None:
    d: Daemon = daemon_factory().start()
    async with d.client() as c:
        s = await c.add_schedule(EVERY_2S, Command("echo", Action.RUN, "tick"))
    assert s.next_run_ms % 2000 == 0 and s.state == "active" and s.catch_up == "once"

    async def submitted(n: int, after: int = 0) -> bool:
        runs = [r for r in await _runs(d, s.schedule_id) if r.tick_ms > after]
        return sum(r.state == SUBMITTED for r in runs) >= n

    await await_for(lambda: submitted(1), 15, what="an on-time run")
    d.stop()
    stopped_ms = int(time.time() * 1000)
    store = daemon_store(d)
    last_before = max(r.tick_ms for r in store.schedule_runs(s.schedule_id, 100))
    store.close()
    await asyncio.sleep(5.0)  # the daemon is down for more than two periods
    d.start()
    await await_for(lambda: submitted(3, after=last_before), 20, what="catch-up then two on time")
    runs = await _runs(d, s.schedule_id)
    old = [r for r in runs if r.tick_ms <= last_before]
    new = [r for r in runs if r.tick_ms > last_before]
    assert all(r.kind == ON_TIME for r in old) and len(old) >= 1
    catch_up, *on_time = new
    # ONE run for the missed period, not one per missed tick
    assert catch_up.kind == CATCH_UP_RUN and catch_up.state == SUBMITTED, catch_up
    assert catch_up.missed_from_ms == last_before + 2000
    # at least two ticks were missed (5 s down, a tick every 2 s), and they made one run
    assert catch_up.tick_ms >= stopped_ms + 2000 and catch_up.tick_ms - catch_up.missed_from_ms >= 2000
    assert len([r for r in new if r.kind == CATCH_UP_RUN]) == 1
    # then on time, every period
    assert on_time and all(r.kind == ON_TIME for r in on_time), new
    ticks = [catch_up.tick_ms] + [r.tick_ms for r in on_time]
    assert all(b - a == 2000 for a, b in itertools.pairwise(ticks)), ticks
    assert all(r.fired_ms - r.tick_ms < 5000 for r in on_time)
    # every run is a real, distinct, succeeded echo task of the schedule's owner
    async with d.client() as c:
        for r in [*old, catch_up, *on_time[:1]]:
            assert r.task_id == run_task_id(s.schedule_id, r.tick_ms)
            await await_for(lambda r=r: _done(c, r.task_id), 20, what=f"task {r.task_id}")
            t, _, _ = await c.get_task(r.task_id, with_events=False)
            assert t.result is not None and t.result.output == "tick"
            assert t.submitted_by == "client:cli"
        _, shown = await c.get_schedule(s.schedule_id, history=100)
        states = {r.task_id: r.task_state for r in shown}
        assert {states[r.task_id] for r in [*old, catch_up]} == {"succeeded"}
        (listed,) = await c.list_schedules()
        assert listed.runs == len(runs) and listed.last_task_id == runs[-1].task_id
        assert listed.last_run_ms >= on_time[-1].tick_ms and listed.next_run_ms > listed.last_run_ms


async def _done(c, task_id: str) -> bool:  # type: ignore[no-untyped-def]
    t, _, _ = await c.get_task(task_id, with_events=False)
    return t.state == TaskState.SUCCEEDED


async def test_skip_policy_fires_nothing_for_the_missed_period(daemon_factory) -> None:
    d: Daemon = daemon_factory().start()
    async with d.client() as c:
        s = await c.add_schedule(EVERY_2S, Command("echo", Action.RUN, "x"), catch_up="skip")
    d.stop()  # before its first tick
    await asyncio.sleep(4.5)
    d.start()

    async def settled() -> bool:
        runs = await _runs(d, s.schedule_id)
        return any(r.kind == "skipped" for r in runs) and any(r.kind == ON_TIME for r in runs)

    await await_for(settled, 15, what="a skipped period, then an on-time run")
    runs = await _runs(d, s.schedule_id)
    skipped = [r for r in runs if r.kind == "skipped"]
    assert len(skipped) == 1 and skipped[0].task_id == "" and skipped[0].missed_from_ms == s.next_run_ms
    assert not [r for r in runs if r.kind == CATCH_UP_RUN]


async def test_owner_scoping_and_refusals(daemon_factory, certs: Path) -> None:
    d: Daemon = daemon_factory().start()
    issue(certs, "bob", "client")
    issue(certs, "worker", "agent")
    async with d.client() as alice, d.client("bob") as bob, d.client("worker") as worker:
        s = await alice.add_schedule("0 9 * * 1-5", Command("echo", Action.RUN, "hi"), timezone="Europe/Paris")
        assert (await bob.list_schedules()) == []
        for call in (
            bob.get_schedule,
            bob.pause_schedule,
            bob.resume_schedule,
            bob.delete_schedule,
        ):
            with pytest.raises(ClientError) as e:
                await call(s.schedule_id)
            assert e.value.code == "NOT_FOUND" and "no schedule" in str(e.value)
        with pytest.raises(ClientError) as e:
            await worker.list_schedules()
        assert e.value.code == "PERMISSION_DENIED"
        bad = [
            ("61 * * * *", "", "", "cron: invalid expression '61 * * * *'"),
            ("* * *", "", "", "cron: invalid expression '* * *': 3 fields"),
            ("* * * * *", "Mars/Olympus", "", "timezone: unknown time zone 'Mars/Olympus'"),
            ("* * * * *", "../" * 40, "", "timezone: 120 characters; an IANA name has at most 64"),
            ("* * * * *", "../../etc/passwd", "", "timezone: unknown time zone"),
            ("* * * * *", "", "always", "catch_up: 'always'; expected once or skip"),
        ]
        for cron, tz, catch_up, words in bad:
            with pytest.raises(ClientError) as e:
                await alice.add_schedule(cron, Command("echo", Action.RUN, "x"), tz, catch_up)
            assert e.value.code == "INVALID_ARGUMENT" and words in str(e.value), str(e.value)
        with pytest.raises(ClientError) as e:
            await alice.add_schedule("* * * * *", Command("nosuch", Action.RUN, "x"))
        assert e.value.code == "NOT_FOUND" and "command.agent_type" in str(e.value)
        # the owner: by a unique prefix, pause, resume, delete
        got, runs = await alice.get_schedule(s.schedule_id[:8])
        assert got.schedule_id == s.schedule_id and got.timezone == "Europe/Paris" and runs == []
        paused = await alice.pause_schedule(s.schedule_id)
        assert paused.state == "paused" and paused.next_run_ms == 0
        resumed = await alice.resume_schedule(s.schedule_id)
        assert resumed.state == "active" and resumed.next_run_ms > time.time() * 1000
        await alice.delete_schedule(s.schedule_id)
        assert await alice.list_schedules() == []
        await alice.check()  # the daemon is still up


def _ticks(log: str, sid: str) -> list[int]:
    out = []
    for line in log.splitlines():
        if '"schedule_tick"' in line and sid in line:
            out.append(json.loads(line)["tick_ms"])
    return out


async def test_two_daemons_on_one_postgres_fire_each_tick_once(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:
    fast = {"ORCHGPT_SCHEDULE_POLL_INTERVAL": "0.3"}  # B sees A's new schedule soon
    a: Daemon = daemon_factory("--store", postgres_url, env=fast, data_dir=tmp_path / "a").start()
    b: Daemon = daemon_factory("--store", postgres_url, env=fast, data_dir=tmp_path / "b").start()
    async with a.client() as c:
        s = await c.add_schedule("* * * * * *", Command("echo", Action.RUN, "both"))

    async def enough() -> bool:
        return len(await _runs(a, s.schedule_id)) >= 6

    await await_for(enough, 20, what="six runs")
    async with a.client() as c:
        await c.pause_schedule(s.schedule_id)
    runs = await _runs(a, s.schedule_id)
    ta, tb = _ticks(a.log(), s.schedule_id), _ticks(b.log(), s.schedule_id)
    assert not set(ta) & set(tb), (ta, tb)  # no tick fired by both daemons
    assert sorted(ta + tb) == [r.tick_ms for r in runs]
    assert len({r.task_id for r in runs}) == len(runs)
