"""Schedules: a stored Command fired on a cron expression as its owner (docs/schedules.md).

Domain only (no protobuf, no store): the ``Schedule`` and ``ScheduleRun`` types, the cron
arithmetic (croniter: five fields, or six with seconds last, in a time zone), and
``plan``: what a daemon does with a schedule whose next run is due: fire the tick on time,
fire once for a missed period (catch-up ``once``), or skip the missed period (``skip``);
never once per missed tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .errors import ErrorCode, OrchgptError
from .models import Command

CATCH_UP = ("once", "skip")  # the first is the default
ACTIVE, PAUSED = "active", "paused"
# A tick fired later than this after its time counts as missed (the daemon was down or
# stopped), and its schedule's catch-up policy applies.
MISFIRE_GRACE_MS = 5_000
MAX_CRON_CHARS = 256
MAX_SCHEDULES_PER_OWNER = 1_000

# run kinds (ScheduleRun.kind) and states (ScheduleRun.state)
ON_TIME, CATCH_UP_RUN, SKIPPED = "on_time", "catch_up", "skipped"
CLAIMED, SUBMITTED, FAILED = "claimed", "submitted", "failed"


class ScheduleError(OrchgptError, ValueError):
    """A schedule that cannot be accepted: the message names the field and the rule."""

    code = ErrorCode.INVALID_ARGUMENT


@dataclass
class Schedule:
    schedule_id: str
    owner: str  # authz.owner_of of the creator: the identity every run is submitted as
    cron: str
    command: Command
    timezone: str = "UTC"
    catch_up: str = CATCH_UP[0]
    state: str = ACTIVE
    created_ms: int = 0
    updated_ms: int = 0
    next_run_ms: int = 0  # the next tick not yet claimed (0 while paused)
    last_run_ms: int = 0  # the tick of the last run claimed (fired or skipped)
    last_task_id: str = ""
    last_error: str = ""
    runs: int = 0  # runs fired


@dataclass
class ScheduleRun:
    """One claimed tick: the task it made (or why none)."""

    schedule_id: str
    tick_ms: int
    fired_ms: int
    kind: str = ON_TIME
    state: str = CLAIMED
    task_id: str = ""
    missed_from_ms: int = 0  # a catch-up or skip: the first tick that was missed
    error: str = ""
    task_state: str = ""  # the run's task now (filled in by GetSchedule; not stored)


@dataclass
class Plan:
    """What to do with a due schedule: claim ``tick`` (moving next_run_ms to ``next_ms``)."""

    tick_ms: int
    next_ms: int
    kind: str
    missed_from_ms: int = 0


def check_timezone(name: str) -> ZoneInfo:
    if len(name) > 64:
        raise ScheduleError(f"timezone: {len(name)} characters; an IANA name has at most 64")
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"timezone: unknown time zone {name!r} (an IANA name such as UTC or Europe/Paris)"
        ) from None


def check_cron(expr: str) -> str:
    """The expression, stripped; ScheduleError naming it when croniter refuses it."""
    e = " ".join(expr.split())
    if not e:
        raise ScheduleError(
            "cron: empty expression (five fields, e.g. '*/5 * * * *', or six with seconds last, e.g. '* * * * * */5')"
        )
    if len(e) > MAX_CRON_CHARS:
        raise ScheduleError(f"cron: {len(e)} characters; at most {MAX_CRON_CHARS}")
    n = len(e.split())
    if n not in (5, 6) and not e.startswith("@"):
        raise ScheduleError(
            f"cron: invalid expression {e!r}: {n} fields; expected five "
            "(minute hour day month weekday) or six (seconds last)"
        )
    try:
        croniter(e, datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))).get_next(float)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"cron: invalid expression {e!r}: {exc}") from None
    return e


class Cron:
    """A checked cron expression in a time zone, over epoch milliseconds."""

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        self.expr = check_cron(expr)
        self.tz = check_timezone(timezone)

    def _at(self, ms: int) -> croniter:
        return croniter(self.expr, datetime.fromtimestamp(ms / 1000, self.tz))

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms``."""
        return round(self._at(ms).get_next(float) * 1000)

    def latest_at_or_before(self, ms: int) -> int:
        """The last tick at or before ``ms``."""
        nxt = self.next_after(ms - 1)
        return nxt if nxt <= ms else round(self._at(ms).get_prev(float) * 1000)


def plan(s: Schedule, now: int, grace_ms: int = MISFIRE_GRACE_MS) -> Plan | None:
    """What to do with ``s`` at ``now``; None when its next tick is not due yet.

    On time: the next tick is due, the one after it is not, and it is at most ``grace_ms``
    late. Otherwise a period was missed (a daemon down, or a long stall): ``once`` fires one run
    (for the latest due tick), ``skip`` fires none; either way the schedule moves on to the
    first tick after ``now``."""
    if s.state != ACTIVE or not s.next_run_ms or s.next_run_ms > now:
        return None
    cron = Cron(s.cron, s.timezone)
    first = s.next_run_ms
    following = cron.next_after(first)
    nxt = cron.next_after(now)
    if following > now and now - first <= grace_ms:
        return Plan(first, nxt, ON_TIME)
    latest = max(first, cron.latest_at_or_before(now))
    kind = CATCH_UP_RUN if s.catch_up == "once" else SKIPPED
    return Plan(latest, nxt, kind, missed_from_ms=first)


def run_task_id(schedule_id: str, tick_ms: int) -> str:
    """The task id of a tick's run: derived, so that a tick never runs twice (Submit is
    idempotent on task ids) whichever daemon fires it, however often."""
    return f"{schedule_id}-{tick_ms}"
