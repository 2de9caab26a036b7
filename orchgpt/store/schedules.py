"""How the stores keep schedules and their run history (orchgpt/schedules.py, docs/schedules.md).

``ScheduleStore`` is the interface; ``SqliteSchedules`` its SQL, shared by SQLite and
PostgreSQL (postgres.py translates the placeholders). A tick is claimed atomically by a
compare-and-set of ``next_run_ms`` together with a row per (schedule, tick): with several
daemons on one PostgreSQL database, exactly one claim of a tick succeeds.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..models import now_ms
from ..schedules import CLAIMED, Plan, Schedule, ScheduleRun
from ..wire import dicts

KEEP_RUNS = 1000  # run history kept per schedule (the oldest are dropped)

_COLUMNS = (
    "schedule_id",
    "owner",
    "cron",
    "timezone",
    "command",
    "catch_up",
    "state",
    "created_ms",
    "updated_ms",
    "next_run_ms",
    "last_run_ms",
    "last_task_id",
    "last_error",
    "runs",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM schedules"
_RUN_COLUMNS = (
    "schedule_id",
    "tick_ms",
    "fired_ms",
    "kind",
    "state",
    "task_id",
    "missed_from_ms",
    "error",
)
_RUN_SELECT = f"SELECT {', '.join(_RUN_COLUMNS)} FROM schedule_runs"


def _row(s: Schedule) -> tuple[Any, ...]:
    d = {**s.__dict__, "command": json.dumps(dicts.command_to_dict(s.command), sort_keys=True)}
    return tuple(d[c] for c in _COLUMNS)


def _from_row(row: tuple[Any, ...]) -> Schedule:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["command"] = dicts.command_from_dict(json.loads(d["command"]))
    return Schedule(**d)


def _run_from_row(row: tuple[Any, ...]) -> ScheduleRun:
    return ScheduleRun(**dict(zip(_RUN_COLUMNS, row, strict=True)))


class ScheduleStore(ABC):
    """What the scheduler and the schedule RPCs need of a store."""

    @abstractmethod
    def add_schedule(self, s: Schedule) -> None: ...

    @abstractmethod
    def get_schedule(self, schedule_id: str) -> Schedule | None: ...

    @abstractmethod
    def list_schedules(self, owner: str | None = None, limit: int = 1000) -> list[Schedule]:
        """Oldest first; ``owner``: only that owner's."""

    @abstractmethod
    def set_schedule_state(self, schedule_id: str, state: str, next_run_ms: int) -> Schedule | None:
        """Pause (next_run_ms 0) or resume; the schedule after, or None when there is none."""

    @abstractmethod
    def delete_schedule(self, schedule_id: str) -> bool: ...

    @abstractmethod
    def due_schedules(self, now: int) -> list[Schedule]:
        """Active schedules whose next tick is at or before ``now``."""

    @abstractmethod
    def next_due_ms(self) -> int:
        """The earliest next tick of the active schedules; 0 when there is none."""

    @abstractmethod
    def claim_tick(self, s: Schedule, plan: Plan, task_id: str, fired_ms: int) -> bool:
        """Atomically: move ``s`` from its ``next_run_ms`` to ``plan.next_ms`` and record the run
        of ``plan.tick_ms``. False (and nothing written) when another claim got there first."""

    @abstractmethod
    def finish_run(self, schedule_id: str, tick_ms: int, state: str, error: str = "") -> None: ...

    @abstractmethod
    def schedule_runs(self, schedule_id: str, limit: int = 50) -> list[ScheduleRun]:
        """Newest first."""

    @abstractmethod
    def claimed_runs(self) -> list[ScheduleRun]:
        """Runs claimed but not yet submitted (a daemon stopped in between), oldest first."""


class SqliteSchedules(ScheduleStore):
    """The SQL of schedules, for the SQLite and PostgreSQL stores (their ``_tx`` and ``_read``)."""

    if TYPE_CHECKING:  # provided by sqlite.SqliteStore and postgres.PostgresStore

        @contextmanager
        def _tx(self, what: str, quiet: bool = False) -> Iterator[sqlite3.Connection]: ...
        def _read(self, what: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    def add_schedule(self, s: Schedule) -> None:
        with self._tx(f"add schedule {s.schedule_id}") as c:
            c.execute(
                f"INSERT INTO schedules ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
                _row(s),
            )

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = self._read("get schedule", _SELECT + " WHERE schedule_id = ?", (schedule_id,))
        return _from_row(rows[0]) if rows else None

    def list_schedules(self, owner: str | None = None, limit: int = 1000) -> list[Schedule]:
        where, params = ("WHERE owner = ? ", [owner]) if owner is not None else ("", [])
        rows = self._read(
            "list schedules",
            f"{_SELECT} {where}ORDER BY created_ms, schedule_id LIMIT ?",
            (*params, limit),
        )
        return [_from_row(r) for r in rows]

    def set_schedule_state(self, schedule_id: str, state: str, next_run_ms: int) -> Schedule | None:
        with self._tx(f"{state} schedule {schedule_id}") as c:
            c.execute(
                "UPDATE schedules SET state = ?, next_run_ms = ?, updated_ms = ? WHERE schedule_id = ?",
                (state, next_run_ms, now_ms(), schedule_id),
            )
        return self.get_schedule(schedule_id)

    def delete_schedule(self, schedule_id: str) -> bool:
        with self._tx(f"delete schedule {schedule_id}") as c:
            c.execute("DELETE FROM schedule_runs WHERE schedule_id = ?", (schedule_id,))
            cur = c.execute("DELETE FROM schedules WHERE schedule_id = ?", (schedule_id,))
            return bool(cur.rowcount)

    def due_schedules(self, now: int) -> list[Schedule]:
        rows = self._read(
            "due schedules",
            _SELECT + " WHERE state = 'active' AND next_run_ms > 0 AND next_run_ms <= ? ORDER BY next_run_ms",
            (now,),
        )
        return [_from_row(r) for r in rows]

    def next_due_ms(self) -> int:
        rows = self._read(
            "next due schedule",
            "SELECT min(next_run_ms) FROM schedules WHERE state = 'active' AND next_run_ms > 0",
        )
        return int(rows[0][0] or 0) if rows else 0

    def claim_tick(self, s: Schedule, plan: Plan, task_id: str, fired_ms: int) -> bool:
        with self._tx(f"claim tick {plan.tick_ms} of schedule {s.schedule_id}") as c:
            cur = c.execute(
                "UPDATE schedules SET next_run_ms = ?, last_run_ms = ?, updated_ms = ?, "
                "runs = runs + ?, last_task_id = coalesce(nullif(?, ''), last_task_id) "
                "WHERE schedule_id = ? AND next_run_ms = ? AND state = 'active'",
                (
                    plan.next_ms,
                    plan.tick_ms,
                    fired_ms,
                    1 if task_id else 0,
                    task_id,
                    s.schedule_id,
                    s.next_run_ms,
                ),
            )
            if cur.rowcount != 1:
                return False
            state = CLAIMED if task_id else "skipped"
            c.execute(
                f"INSERT INTO schedule_runs ({', '.join(_RUN_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _RUN_COLUMNS)}) "
                "ON CONFLICT (schedule_id, tick_ms) DO NOTHING",
                (
                    s.schedule_id,
                    plan.tick_ms,
                    fired_ms,
                    plan.kind,
                    state,
                    task_id,
                    plan.missed_from_ms,
                    "",
                ),
            )
            c.execute(
                "DELETE FROM schedule_runs WHERE schedule_id = ? AND tick_ms < ("
                "SELECT tick_ms FROM schedule_runs WHERE schedule_id = ? "
                "ORDER BY tick_ms DESC LIMIT 1 OFFSET ?)",
                (s.schedule_id, s.schedule_id, KEEP_RUNS - 1),
            )
            return True

    def finish_run(self, schedule_id: str, tick_ms: int, state: str, error: str = "") -> None:
        with self._tx(f"finish run {tick_ms} of schedule {schedule_id}") as c:
            c.execute(
                "UPDATE schedule_runs SET state = ?, error = ? WHERE schedule_id = ? AND tick_ms = ?",
                (state, error, schedule_id, tick_ms),
            )
            c.execute("UPDATE schedules SET last_error = ? WHERE schedule_id = ?", (error, schedule_id))

    def schedule_runs(self, schedule_id: str, limit: int = 50) -> list[ScheduleRun]:
        rows = self._read(
            "schedule runs",
            _RUN_SELECT + " WHERE schedule_id = ? ORDER BY tick_ms DESC LIMIT ?",
            (schedule_id, limit),
        )
        return [_run_from_row(r) for r in rows]

    def claimed_runs(self) -> list[ScheduleRun]:
        rows = self._read(
            "claimed schedule runs",
            _RUN_SELECT + " WHERE state = 'claimed' ORDER BY fired_ms LIMIT 1000",
        )
        return [_run_from_row(r) for r in rows]
