"""Schedules: cron arithmetic, the catch-up plan, and the stores (SQLite, PostgreSQL, memory),
including the atomic claim of a tick that makes several daemons fire it exactly once."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orchgpt.models import Action, Command
from orchgpt.schedules import (
    CATCH_UP_RUN,
    ON_TIME,
    SKIPPED,
    SUBMITTED,
    Cron,
    Schedule,
    ScheduleError,
    plan,
    run_task_id,
)
from orchgpt.store import MemoryStore, Store, open_store
from orchgpt.store.schedules import KEEP_RUNS

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000_000  # a whole minute (epoch ms)


def sched(
    cron: str = "* * * * * */2",
    catch_up: str = "once",
    next_run_ms: int = T0,
    sid: str = "s1",
    owner: str = "client:cli",
    tz: str = "UTC",
) -> Schedule:
    cmd = Command("echo", Action.RUN, "hello", options={"k": "v"})
    return Schedule(
        sid,
        owner,
        cron,
        cmd,
        timezone=tz,
        catch_up=catch_up,
        created_ms=T0 - 10_000,
        updated_ms=T0 - 10_000,
        next_run_ms=next_run_ms,
    )


# ---------------------------------------------------------------- cron


def test_six_field_cron_has_seconds_last() -> None:
    c = Cron("* * * * * */5")
    assert c.next_after(T0) == T0 + 5_000
    assert c.next_after(T0 + 1) == T0 + 5_000
    assert c.latest_at_or_before(T0 + 7_000) == T0 + 5_000
    assert c.latest_at_or_before(T0 + 5_000) == T0 + 5_000
    assert Cron("*/5 * * * *").next_after(T0) == T0 + 5 * 60_000  # five fields: minutes


def test_time_zone_moves_the_ticks() -> None:
    utc = Cron("0 9 * * *", "UTC").next_after(T0)
    paris = Cron("0 9 * * *", "Europe/Paris").next_after(T0)
    assert datetime.fromtimestamp(paris / 1000, ZoneInfo("Europe/Paris")).hour == 9
    assert paris != utc


@pytest.mark.parametrize(
    "expr, words",
    [
        ("", "empty"),
        ("* * *", "3 fields"),
        ("61 * * * *", "'61 * * * *'"),
        ("* * * * * * * ", "7 fields"),
        ("a b c d e", "'a b c d e'"),
    ],
)
def test_invalid_cron_is_named(expr: str, words: str) -> None:
    with pytest.raises(ScheduleError) as e:
        Cron(expr)
    assert str(e.value).startswith("cron:") and words in str(e.value)


def test_unknown_time_zone_is_named() -> None:
    with pytest.raises(ScheduleError, match="timezone: unknown time zone 'Mars/Olympus'"):
        Cron("* * * * *", "Mars/Olympus")


# ---------------------------------------------------------------- the plan


def test_plan_on_time_and_not_yet() -> None:
    s = sched()
    assert plan(s, T0 - 1) is None
    p = plan(s, T0 + 30)
    assert p is not None and (p.kind, p.tick_ms, p.next_ms) == (ON_TIME, T0, T0 + 2_000)


@pytest.mark.parametrize("catch_up, kind", [("once", CATCH_UP_RUN), ("skip", SKIPPED)])
def test_missed_period_is_one_decision_not_one_per_tick(catch_up: str, kind: str) -> None:
    s = sched(catch_up=catch_up)
    now = T0 + 12_345  # six ticks missed
    p = plan(s, now)
    assert p is not None and p.kind == kind
    assert p.tick_ms == T0 + 12_000 and p.missed_from_ms == T0 and p.next_ms == T0 + 14_000
    s.next_run_ms = p.next_ms
    assert plan(s, now) is None  # nothing more for the same period


def test_one_tick_missed_by_more_than_the_grace_is_a_catch_up() -> None:
    s = sched(cron="0 * * * *")  # hourly: the daemon was down across one tick
    p = plan(s, T0 + 60_000, grace_ms=5_000)
    assert p is not None and p.kind == CATCH_UP_RUN and p.tick_ms == T0


def test_run_task_ids_are_derived_and_valid() -> None:
    from orchgpt.mesh import TASK_ID_RE

    tid = run_task_id("0123456789abcdef0123456789abcdef", T0)
    assert tid == run_task_id("0123456789abcdef0123456789abcdef", T0) and TASK_ID_RE.match(tid)


# ---------------------------------------------------------------- the stores


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "postgres":
        return open_store(request.getfixturevalue("postgres_url"))
    return open_store(str(tmp_path / "orchgpt.db"))


def test_round_trip_list_owner_pause_delete(store: Store) -> None:
    a, b = sched(sid="a"), sched(sid="b", owner="client:other", tz="Europe/Paris", catch_up="skip")
    store.add_schedule(a)
    store.add_schedule(b)
    got = store.get_schedule("b")
    assert got == b and got.command.options == {"k": "v"}
    assert [s.schedule_id for s in store.list_schedules()] == ["a", "b"]
    assert [s.schedule_id for s in store.list_schedules(owner="client:cli")] == ["a"]
    assert store.next_due_ms() == T0
    paused = store.set_schedule_state("a", "paused", 0)
    assert paused is not None and paused.state == "paused"
    assert [s.schedule_id for s in store.due_schedules(T0)] == ["b"]
    assert store.delete_schedule("b") and not store.delete_schedule("b")
    assert store.get_schedule("b") is None and store.next_due_ms() == 0
    assert store.set_schedule_state("nope", "paused", 0) is None


def test_claim_is_a_compare_and_set_and_keeps_history(store: Store) -> None:
    s = sched()
    store.add_schedule(s)
    p = plan(s, T0 + 10)
    assert p is not None
    assert store.claim_tick(s, p, run_task_id("s1", p.tick_ms), T0 + 10)
    assert not store.claim_tick(s, p, run_task_id("s1", p.tick_ms), T0 + 11)  # stale next_run_ms
    after = store.get_schedule("s1")
    assert after is not None and (after.next_run_ms, after.last_run_ms, after.runs) == (
        T0 + 2_000,
        T0,
        1,
    )
    assert [r.task_id for r in store.claimed_runs()] == ["s1-" + str(T0)]
    store.finish_run("s1", T0, SUBMITTED)
    assert store.claimed_runs() == []
    runs = store.schedule_runs("s1")
    assert [(r.tick_ms, r.kind, r.state) for r in runs] == [(T0, ON_TIME, SUBMITTED)]
    # a skipped period claims without a task
    after.next_run_ms = T0 + 2_000
    skip = plan(sched(catch_up="skip", next_run_ms=T0 + 2_000), T0 + 60_000)
    assert skip is not None and store.claim_tick(after, skip, "", T0 + 60_000)
    runs = store.schedule_runs("s1")
    assert runs[0].kind == SKIPPED and runs[0].task_id == "" and runs[0].missed_from_ms == T0 + 2_000
    final = store.get_schedule("s1")
    assert final is not None and final.runs == 1 and final.last_task_id == "s1-" + str(T0)


def test_history_is_bounded(store: Store) -> None:
    s = sched()
    store.add_schedule(s)
    for i in range(KEEP_RUNS + 5):
        p = plan(s, s.next_run_ms)
        assert p is not None and store.claim_tick(s, p, f"t{i}", s.next_run_ms)
        s.next_run_ms = p.next_ms
    runs = store.schedule_runs("s1", limit=10_000)
    assert len(runs) == KEEP_RUNS and runs[0].task_id == f"t{KEEP_RUNS + 4}"


def test_two_stores_racing_on_one_postgres_claim_each_tick_once(postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(4)]
    stores[0].add_schedule(sched())
    wins: list[int] = []
    barrier = threading.Barrier(len(stores))

    def race(st: Store) -> None:
        for _ in range(20):
            barrier.wait(10)
            s = st.get_schedule("s1")
            assert s is not None
            p = plan(s, s.next_run_ms)
            assert p is not None
            if st.claim_tick(s, p, run_task_id("s1", p.tick_ms), p.tick_ms):
                wins.append(p.tick_ms)

    threads = [threading.Thread(target=race, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(wins) == len(set(wins)) >= 20  # each tick claimed once; every round claims one
    assert len(stores[0].schedule_runs("s1", limit=100)) == len(wins)
    for st in stores:
        st.close()
