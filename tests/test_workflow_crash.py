"""A daemon killed (SIGKILL) in the middle of a group chat: after the restart the workflow task
runs again, every turn it had finished answers its delegation at once from the stored sub-task
(turn ids derive from the workflow task's id and the turn number), and the chat goes on from the
turn it was on: no finished turn is asked of the model twice."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from orchgpt.models import Command, TaskEvent
from tests.support.mesh import Daemon, await_for
from tests.support.scripted_openai import Response, ScriptedOpenAI, hang
from tests.support.workflows import Speakers, assistant, write

pytestmark = pytest.mark.timeout(120)


class HangOnce(Speakers):
    """Speakers whose first request for ``turn`` hangs (the daemon is killed meanwhile)."""

    def __init__(self, turn: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.turn = turn
        self.hung = threading.Event()

    def __call__(self, req: dict[str, Any]) -> Response:
        r = super().__call__(req)
        if self.calls[-1][1] == self.turn and not self.hung.is_set():
            self.hung.set()
            return hang(60)
        return r


def test_a_killed_daemon_resumes_the_chat_without_repeating_a_turn(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "chat",
        f"""
name = "chat"
type = "groupchat"
agents = [{assistant("coder", "You are coder.")}, {assistant("reviewer", "You are reviewer.")}]
max_rounds = 4
summary_method = "last"
""",
    )
    sp = HangOnce(3, replies={"coder": ["c1", "c3"], "reviewer": ["r2", "r4"]})
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf"), env=srv.env(api_key="test")).start()
        root = asyncio.run(_until_turn_hangs(d, sp))
        d.proc.send_signal(9)  # type: ignore[union-attr]
        d.proc.wait(10)  # type: ignore[union-attr]
        d.start()
        result = asyncio.run(_result(d, root))
    assert result.state == "succeeded", result.error
    got = [(e["speaker"], e["content"], e["turn"]) for e in json.loads(result.data["transcript"])]
    assert got == [
        ("coder", "c1", 1),
        ("reviewer", "r2", 2),
        ("coder", "c3", 3),
        ("reviewer", "r4", 4),
    ]
    # turns 1 and 2 finished before the kill: asked once; turn 3 was in flight: asked again
    assert sp.calls.count(("coder", 1)) == 1 and sp.calls.count(("reviewer", 2)) == 1
    assert sp.calls.count(("coder", 3)) == 2 and sp.calls.count(("reviewer", 4)) == 1
    # the turn ids are the ones derived from the workflow task's id: one sub-task per turn
    ids = [e["task_id"] for e in json.loads(result.data["transcript"])]
    assert len(set(ids)) == 4 and all(i.startswith(root[:31] + ".") for i in ids)


async def _until_turn_hangs(d: Daemon, sp: HangOnce) -> str:
    """Submit the workflow and return its id once the model holds turn 3's request."""
    async with d.client(timeout=30) as c:
        first: list[TaskEvent] = []

        async def follow() -> None:
            async for ev in c.submit(Command("workflow", input="build it", options={"workflow": "chat"})):
                first.append(ev)

        reader = asyncio.create_task(follow())
        try:
            await await_for(lambda: sp.hung.is_set(), 60, what="turn 3 to reach the model")
        finally:
            reader.cancel()
        return first[0].task_id


async def _result(d: Daemon, root: str) -> Any:
    async with d.client(timeout=30) as c:
        for _ in range(200):
            task, _evs, _children = await c.get_task(root, with_events=False)
            if task.state.terminal:
                return task.result
            await asyncio.sleep(0.25)
    raise AssertionError("the workflow did not finish after the restart")
