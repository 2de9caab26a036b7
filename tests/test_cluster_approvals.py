"""Approvals across the daemons of a cluster (issue 19): the agent asking runs on daemon A,
the user watches and answers on daemon B; the request crosses through the store, the
answer as a durable request row for the daemon holding the task (cluster_requests.py). Real daemons, real PostgreSQL, an
in-process agentd Link with its own certificate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import paths_for
from orchgpt.models import ApprovalDecision, ApprovalResponse, Command, EventKind
from tests.support.mesh import await_for, issue

pytestmark = pytest.mark.timeout(120)


class AskingAgent(Agent):
    type = "asker"
    capabilities = ("asker",)

    async def run(self, ctx: TaskContext) -> Outcome:
        r = await ctx.approve("write_file", json.dumps({"path": "f.txt"}), "write f.txt")
        return Outcome(output=f"{r.decision}:{r.feedback}")


async def test_an_approval_asked_on_one_daemon_is_answered_on_the_other(
    daemon_factory, postgres_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    a, b = (
        daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / f"data-{i}").start()
        for i in range(2)
    )
    issue(a.certs, "asker-1", "agent")
    link = Link(AskingAgent(), "asker-1", a.address, paths_for(a.certs, "asker-1"), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 15)

        async def listed() -> bool:
            async with b.client() as c:
                return any(x.agent_id == "asker-1" for x in await c.list_agents())

        await await_for(listed, timeout=20, what="the asker listed on the second daemon")
        async with b.client(timeout=60) as c:
            out = ""
            async for ev in c.submit(Command("asker", input="go", approval=True)):
                if ev.kind == EventKind.APPROVAL and ev.approval is not None:
                    await c.approve(
                        ev.task_id,
                        ApprovalResponse(ev.approval.request_id, ApprovalDecision.FEEDBACK, feedback="use g.txt"),
                    )
                if ev.kind == EventKind.RESULT and ev.result is not None:
                    out = ev.result.output
        assert out == "feedback:use g.txt"
        assert "approval_forwarded" in b.log()
    finally:
        await link.stop(grace=1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
