"""A real agentd streaming token deltas fast through a real daemon (issue 17): the agent folds
them (orchgpt/wire/token_fold.py), so the daemon receives, numbers and stores far fewer events
than deltas, and a watcher still gets every delta's text once, in order, each event standing
for ``data["seq_from"]..seq`` with no gap and no overlap. A slow stream is not folded."""

from __future__ import annotations

import itertools

import pytest

from orchgpt.models import Command, EventKind, TaskEvent, TaskState, first_seq
from tests.support.mesh import Daemon

pytestmark = pytest.mark.timeout(90)

N = 1500  # deltas, one per ~0.5 ms: each its own frame and event without folding


def _check_numbering(events: list[TaskEvent]) -> list[TaskEvent]:
    """Every event follows the one before it (its range starts one past it); the token events."""
    assert first_seq(events[0]) == 1
    for a, b in itertools.pairwise(events):
        assert first_seq(b) == a.seq + 1 and b.seq >= first_seq(b), (a, b)
    return [e for e in events if e.kind == EventKind.TOKEN]


async def test_agentd_folds_a_fast_token_stream_and_every_delta_arrives_once_in_order(daemon: Daemon) -> None:
    words = [f"w{i}" for i in range(N)]
    cmd = Command("echo", input=" ".join(words), task_id="fold-1", options={"tokens": "1", "token_gap": "0.0005"})
    async with daemon.client(timeout=60) as c:
        live = [ev async for ev in c.submit(cmd)]  # the Submit stream watches the task live
        assert live[-1].kind == EventKind.RESULT and live[-1].state == TaskState.SUCCEEDED
        _, stored, _ = await c.get_task("fold-1")
    for events in (live, stored):
        tokens = _check_numbering([e for e in events if e.task_id == "fold-1"])
        assert "".join(e.text for e in tokens) == "".join(w + " " for w in words)
        assert sum(e.seq - first_seq(e) + 1 for e in tokens) == N
    # what the agent sent, as the daemon stored it: folded (one event per delta before)
    stored_tokens = [e for e in stored if e.kind == EventKind.TOKEN]
    assert len(stored_tokens) <= N // 3, len(stored_tokens)


async def test_a_slow_token_stream_is_sent_delta_by_delta(daemon: Daemon) -> None:
    words = [f"s{i}" for i in range(6)]
    cmd = Command("echo", input=" ".join(words), task_id="fold-2", options={"tokens": "1", "token_gap": "0.15"})
    async with daemon.client(timeout=60) as c:
        live = [ev async for ev in c.submit(cmd)]
    tokens = _check_numbering(live)
    assert "".join(e.text for e in tokens) == "".join(w + " " for w in words)
    # 150 ms apart, far over the 20 ms linger: each delta went on its own, not held for more
    assert len(tokens) >= 5, [(first_seq(e), e.seq) for e in tokens]
