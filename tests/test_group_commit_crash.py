"""Group commit and crashes (issue 17): SIGKILL a real `orchgpt serve` inside a commit window
while submissions arrive. Every task whose Submit was answered is there after the restart and
runs exactly once; what was never answered is sent again (same ids) and runs once too.

The daemon holds every window open for 100 ms (ORCHGPT_COMMIT_WINDOW_HOLD=1), so the kill lands
inside one: an answer released before its commit would be a task lost here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.crash_recovery import run

pytestmark = pytest.mark.timeout(90)


async def test_sigkill_inside_a_commit_window_loses_and_repeats_nothing(tmp_path: Path) -> None:
    c = await asyncio.wait_for(
        run(tmp_path, tasks=24, agents=2, delay=0.05, mode="remote", kill="window", commit_window_ms=100), 80
    )
    assert 0 < c.unacknowledged_at_kill < c.submitted, c  # killed while submissions were arriving
    assert c.lost == 0, c  # acknowledged before the kill, unknown after it
    assert c.acknowledged == c.submitted == 24 and c.succeeded == 24, c
    assert c.completed_twice == 0 and c.executed_twice == 0, c
    assert c.resubmit_reran == 0, c
    assert c.ok, c.problems


async def test_sigkill_inside_a_commit_window_on_postgres_loses_and_repeats_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    """The same on the PostgreSQL store (store/pg_group.py: the writer thread's COMMIT)."""
    c = await asyncio.wait_for(
        run(
            tmp_path,
            tasks=24,
            agents=2,
            delay=0.05,
            mode="remote",
            kill="window",
            commit_window_ms=100,
            store_url=postgres_url,
        ),
        80,
    )
    assert 0 < c.unacknowledged_at_kill < c.submitted, c
    assert c.lost == 0, c
    assert c.acknowledged == c.submitted == 24 and c.succeeded == 24, c
    assert c.completed_twice == 0 and c.executed_twice == 0, c
    assert c.resubmit_reran == 0, c
    assert c.ok, c.problems
