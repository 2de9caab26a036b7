"""The daemon's scheduler loop: fires due schedules through the mesh (docs/schedules.md).

One asyncio task per daemon (orchgpt/server.py starts and stops it). Each pass fires
every schedule whose next tick is due, then sleeps until the earliest next tick (at most
``max_sleep`` seconds, so that schedules added by another daemon on the same PostgreSQL
store are seen), or until ``wake()`` (a schedule was added or resumed here).

Firing a tick: ``schedules.plan`` decides (on time, one catch-up run, or skip), the store
claims the tick atomically (only one daemon's claim succeeds), and the schedule's command is
submitted as its owner with the task id ``run_task_id(schedule, tick)``: Submit is
idempotent on task ids, so a claimed run that a stopped daemon never submitted is submitted
again at the next pass without ever running twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace

from . import authz, logs
from .errors import RoutingError, StoreError
from .models import Command, Task, now_ms
from .schedules import (
    FAILED,
    MISFIRE_GRACE_MS,
    PAUSED,
    SKIPPED,
    SUBMITTED,
    Schedule,
    ScheduleError,
    plan,
    run_task_id,
)
from .store import Store

log = logs.get("orchgpt.scheduler")

Submit = Callable[[Command, str], tuple[Task, bool]]  # Mesh.submit(cmd, submitted_by)
Lookup = Callable[[str], object]  # task id -> Task | None
# Routing refusals that an agent reconnecting after a restart may lift (its type is unknown
# until it registers): while the scheduler is younger than ``settle_s`` such a run is retried.
_RETRYABLE = ("NOT_FOUND", "FAILED_PRECONDITION", "UNAVAILABLE")
RETRY_AFTER_MS = 2_000


class Scheduler:
    def __init__(
        self,
        store: Store,
        submit: Submit,
        get_task: Lookup | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        max_sleep: float = 30.0,
        grace_ms: int = MISFIRE_GRACE_MS,
        settle_s: float = 15.0,
    ) -> None:
        self.store = store
        self.submit = submit
        self.get_task = get_task or (lambda _task_id: None)
        self.clock = clock
        self.max_sleep = max_sleep
        self.grace_ms = grace_ms
        self.settle_s = settle_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._deferred = False  # a run waits for its agent type: look again soon

    def start(self) -> None:
        self._started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Look again now (a schedule was added, resumed or deleted)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                next_ms = self.run_due()
            except Exception as exc:  # the store refused: keep the daemon up, look again soon
                log.warning("scheduler_pass_failed", error=str(exc))
                next_ms = -1
            now = self.clock()
            if not next_ms:
                delay = self.max_sleep
            elif next_ms <= now:  # due but not fired, or the pass failed: not a busy loop
                delay = 1.0
            else:
                delay = min(self.max_sleep, (next_ms - now) / 1000)
            if self._deferred:
                delay = min(delay, RETRY_AFTER_MS / 1000)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def run_due(self) -> int:
        """One pass: submit left-over claimed runs, fire due ticks. Returns the earliest next
        tick (epoch ms), 0 when no schedule is active."""
        self._deferred = False
        self._resubmit_claimed()
        now = self.clock()
        for s in self.store.due_schedules(now):
            self._fire(s, now)
        return self.store.next_due_ms()

    def _fire(self, s: Schedule, now: int) -> None:
        try:
            p = plan(s, now, self.grace_ms)
        except ScheduleError as exc:  # stored before a rule changed: stop it rather than spin
            log.error("schedule_invalid", schedule_id=s.schedule_id, error=str(exc))
            self.store.set_schedule_state(s.schedule_id, PAUSED, 0)
            return
        if p is None:
            return
        task_id = "" if p.kind == SKIPPED else run_task_id(s.schedule_id, p.tick_ms)
        if not self.store.claim_tick(s, p, task_id, now):
            log.debug("schedule_tick_taken", schedule_id=s.schedule_id, tick_ms=p.tick_ms)
            return
        log.info(
            "schedule_tick",
            schedule_id=s.schedule_id,
            kind=p.kind,
            tick_ms=p.tick_ms,
            late_ms=now - p.tick_ms,
            missed_from_ms=p.missed_from_ms or None,
            task_id=task_id or None,
            next_run_ms=p.next_ms,
        )
        if task_id:
            self._submit(s, p.tick_ms, task_id)

    def _submit(self, s: Schedule, tick_ms: int, task_id: str) -> None:
        cmd = replace(s.command, task_id=task_id, session_id="", options=dict(s.command.options))
        d = authz.workspace_option(cmd.options, self.get_task, owner=s.owner)
        if not d:
            self._failed(s, tick_ms, task_id, d.message)
            return
        try:
            task, created = self.submit(cmd, s.owner)
        except RoutingError as exc:
            settling = time.monotonic() - self._started < self.settle_s
            if exc.code in _RETRYABLE and settling:
                log.info(
                    "schedule_run_deferred",
                    schedule_id=s.schedule_id,
                    task_id=task_id,
                    reason=str(exc),
                )
                self._deferred = True
                return  # stays claimed: submitted again at a later pass
            self._failed(s, tick_ms, task_id, str(exc))
            return
        except StoreError as exc:  # stays claimed: submitted again once the store works
            log.warning(
                "schedule_run_not_submitted",
                schedule_id=s.schedule_id,
                task_id=task_id,
                error=str(exc),
            )
            return
        if not created and task.submitted_by != s.owner:
            self._failed(s, tick_ms, task_id, f"task id {task_id!r} is in use by another owner")
            return
        self.store.finish_run(s.schedule_id, tick_ms, SUBMITTED)

    def _failed(self, s: Schedule, tick_ms: int, task_id: str, error: str) -> None:
        log.warning("schedule_run_failed", schedule_id=s.schedule_id, task_id=task_id, error=error)
        self.store.finish_run(s.schedule_id, tick_ms, FAILED, error)

    def _resubmit_claimed(self) -> None:
        """Runs claimed but not submitted (a daemon stopped in between, a store fault, an agent
        type not back yet): submit them again (the derived task id makes it idempotent)."""
        old = self.clock() - RETRY_AFTER_MS
        for run in self.store.claimed_runs():
            if run.fired_ms > old:
                continue
            s = self.store.get_schedule(run.schedule_id)
            if s is not None and run.task_id:
                self._submit(s, run.tick_ms, run.task_id)
