"""The one-shot CLI with agents that ask: approvals refused without --yes and given with it, and
sub-tasks shown with their own tag."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import paths_for
from orchgpt.models import Action, Delegation
from tests.support import cli_oneshot
from tests.support.cli_oneshot import cli
from tests.support.mesh import Daemon, issue

# The shared fixture (pytest finds a fixture by its name in the test's module).
mesh = cli_oneshot.mesh


class AskingAgent(Agent):
    """Asks for approval of `calls` tool calls and reports the answers."""

    type = "asker"
    capabilities = ("asker",)

    async def run(self, ctx: TaskContext) -> Outcome:
        answers = []
        for i in range(int(ctx.task.options.get("calls", "1"))):
            r = await ctx.approve("write_file", json.dumps({"path": f"f{i}.txt"}), f"write f{i}.txt")
            answers.append(f"{r.decision}:{r.count}" + (f":{r.feedback}" if r.feedback else ""))
        return Outcome(output=" ".join(answers))


@pytest.fixture
async def asker(mesh: Daemon, tmp_path: Path) -> AsyncIterator[Link]:
    name = f"asker-{tmp_path.name[-12:]}".replace("_", "-")
    issue(mesh.certs, name, "agent")
    link = Link(AskingAgent(), name, mesh.address, paths_for(mesh.certs, name), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    await asyncio.wait_for(link.connected.wait(), 15)
    yield link
    await link.stop(grace=1)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_approval_is_rejected_without_yes(mesh: Daemon, asker: Link) -> None:
    r = await asyncio.to_thread(cli, mesh, "-c", "/asker run write it --approve")
    assert r.returncode == 0, r.stderr
    assert "reject:1:rejected: the user is not there to approve (one-shot mode without --yes)" in r.stdout
    assert "approval needed: write_file: write f0.txt" in r.stdout
    assert r.stderr.splitlines() == [
        f"autogpt: task {r.stdout.split()[1].rstrip(']')} asks to run write_file (write f0.txt): rejected; "
        "pass --yes to approve tool calls in one-shot mode, or use the interactive prompt"
    ]


async def test_yes_approves_every_call(mesh: Daemon, asker: Link) -> None:
    r = await asyncio.to_thread(cli, mesh, "--yes", "--approve", "-c", "/asker run write -o calls=2")
    assert r.returncode == 0, r.stderr
    assert "approve:1 approve:1" in r.stdout.splitlines()
    assert r.stderr.count("approved (--yes)") == 2


# ------------------------------------------------------------------ sub-tasks


class DelegatingAgent(Agent):
    """Hands its input to an echo agent (DELEGATE_TASK) and reports the sub-task's output."""

    type = "lead"

    async def run(self, ctx: TaskContext) -> Outcome:
        ctx.log("delegating to echo")
        r = await ctx.delegate(Delegation("echo", f"sub: {ctx.task.input}", action=Action.RUN))
        return Outcome(output=f"echo said {r.output!r}")


async def test_sub_task_events_are_shown_with_their_own_tag(mesh: Daemon, tmp_path: Path) -> None:
    issue(mesh.certs, "lead-1", "agent")
    link = Link(DelegatingAgent(), "lead-1", mesh.address, paths_for(mesh.certs, "lead-1"), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 15)
        r = await asyncio.to_thread(cli, mesh, "-c", "/lead run plan it")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        parent = lines[0].split("]")[0] + "]"
        assert parent.startswith("[lead ")
        sub = [x for x in lines if x.startswith("[echo ")]
        assert sub and sub[0].endswith("queued for echo")
        assert any(x.endswith("] sub: plan it") for x in sub)  # the sub-task's output, tagged with it
        assert any(x.startswith("[echo ") and " succeeded (" in x for x in sub)
        assert "echo said 'sub: plan it'" in lines
        assert lines[-1].startswith(parent + " succeeded")
    finally:
        await link.stop(grace=1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
