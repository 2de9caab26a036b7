"""Schedules in memory (the ``memory:`` store): the same contract as store/schedules.py."""

from __future__ import annotations

import copy

from ..models import now_ms
from ..schedules import ACTIVE, CLAIMED, Plan, Schedule, ScheduleRun
from .schedules import KEEP_RUNS, ScheduleStore


class MemorySchedules(ScheduleStore):
    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._runs: dict[str, dict[int, ScheduleRun]] = {}

    def add_schedule(self, s: Schedule) -> None:
        self._schedules[s.schedule_id] = copy.deepcopy(s)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        s = self._schedules.get(schedule_id)
        return copy.deepcopy(s) if s else None

    def list_schedules(self, owner: str | None = None, limit: int = 1000) -> list[Schedule]:
        out = [s for s in self._schedules.values() if owner is None or s.owner == owner]
        out.sort(key=lambda s: (s.created_ms, s.schedule_id))
        return [copy.deepcopy(s) for s in out[:limit]]

    def set_schedule_state(self, schedule_id: str, state: str, next_run_ms: int) -> Schedule | None:
        s = self._schedules.get(schedule_id)
        if s is None:
            return None
        s.state, s.next_run_ms, s.updated_ms = state, next_run_ms, now_ms()
        return copy.deepcopy(s)

    def delete_schedule(self, schedule_id: str) -> bool:
        self._runs.pop(schedule_id, None)
        return self._schedules.pop(schedule_id, None) is not None

    def due_schedules(self, now: int) -> list[Schedule]:
        due = [s for s in self._schedules.values() if s.state == ACTIVE and 0 < s.next_run_ms <= now]
        return [copy.deepcopy(s) for s in sorted(due, key=lambda s: s.next_run_ms)]

    def next_due_ms(self) -> int:
        return min(
            (s.next_run_ms for s in self._schedules.values() if s.state == ACTIVE and s.next_run_ms > 0),
            default=0,
        )

    def claim_tick(self, s: Schedule, plan: Plan, task_id: str, fired_ms: int) -> bool:
        cur = self._schedules.get(s.schedule_id)
        if cur is None or cur.state != ACTIVE or cur.next_run_ms != s.next_run_ms:
            return False
        cur.next_run_ms, cur.last_run_ms, cur.updated_ms = plan.next_ms, plan.tick_ms, fired_ms
        if task_id:
            cur.runs += 1
            cur.last_task_id = task_id
        runs = self._runs.setdefault(s.schedule_id, {})
        runs.setdefault(
            plan.tick_ms,
            ScheduleRun(
                s.schedule_id,
                plan.tick_ms,
                fired_ms,
                plan.kind,
                CLAIMED if task_id else "skipped",
                task_id,
                plan.missed_from_ms,
            ),
        )
        for old in sorted(runs)[:-KEEP_RUNS]:
            del runs[old]
        return True

    def finish_run(self, schedule_id: str, tick_ms: int, state: str, error: str = "") -> None:
        run = self._runs.get(schedule_id, {}).get(tick_ms)
        if run is not None:
            run.state, run.error = state, error
        s = self._schedules.get(schedule_id)
        if s is not None:
            s.last_error = error

    def schedule_runs(self, schedule_id: str, limit: int = 50) -> list[ScheduleRun]:
        runs = self._runs.get(schedule_id, {})
        return [copy.deepcopy(runs[t]) for t in sorted(runs, reverse=True)[:limit]]

    def claimed_runs(self) -> list[ScheduleRun]:
        out = [r for runs in self._runs.values() for r in runs.values() if r.state == CLAIMED]
        return [copy.deepcopy(r) for r in sorted(out, key=lambda r: r.fired_ms)]
