"""Schedules on the wire: orchgpt/schedules.py's types <-> schedules.proto messages."""

from __future__ import annotations

from ..iac.v1 import schedules_pb2 as spb
from ..schedules import Schedule, ScheduleRun
from . import codec


def schedule_to_pb(s: Schedule) -> spb.Schedule:
    return spb.Schedule(
        schedule_id=s.schedule_id,
        owner=s.owner,
        cron=s.cron,
        timezone=s.timezone,
        command=codec.command_to_pb(s.command),
        catch_up=s.catch_up,
        state=s.state,
        created_ms=s.created_ms,
        updated_ms=s.updated_ms,
        next_run_ms=s.next_run_ms,
        last_run_ms=s.last_run_ms,
        last_task_id=s.last_task_id,
        last_error=s.last_error,
        runs=s.runs,
    )


def schedule_from_pb(m: spb.Schedule) -> Schedule:
    return Schedule(
        schedule_id=m.schedule_id,
        owner=m.owner,
        cron=m.cron,
        timezone=m.timezone,
        command=codec.command_from_pb(m.command),
        catch_up=m.catch_up,
        state=m.state,
        created_ms=m.created_ms,
        updated_ms=m.updated_ms,
        next_run_ms=m.next_run_ms,
        last_run_ms=m.last_run_ms,
        last_task_id=m.last_task_id,
        last_error=m.last_error,
        runs=m.runs,
    )


def run_to_pb(r: ScheduleRun) -> spb.ScheduleRun:
    return spb.ScheduleRun(
        tick_ms=r.tick_ms,
        fired_ms=r.fired_ms,
        kind=r.kind,
        state=r.state,
        task_id=r.task_id,
        missed_from_ms=r.missed_from_ms,
        error=r.error,
        task_state=r.task_state,
    )


def run_from_pb(m: spb.ScheduleRun, schedule_id: str) -> ScheduleRun:
    return ScheduleRun(
        schedule_id,
        m.tick_ms,
        m.fired_ms,
        m.kind,
        m.state,
        m.task_id,
        m.missed_from_ms,
        m.error,
        m.task_state,
    )
