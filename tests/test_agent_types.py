"""The daemon does not import the agent package: it asks the agent program which built-in
types it runs (`agentd --list-types`), or the `agent_types` setting names them (issue 12)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agentd.builtin import available_types
from orchgpt import agent_types
from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, EventKind
from tests.support.mesh import Daemon

pytestmark = pytest.mark.timeout(90)


async def run_task(client, cmd: Command):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        return [ev async for ev in client.submit(cmd)]

    events = await asyncio.wait_for(go(), 30)
    return next(e for e in events if e.kind == EventKind.RESULT)


async def test_the_agent_program_lists_its_types() -> None:
    assert await agent_types.discover() == available_types()
    assert len(available_types()) == 14  # the nine agents, workflow, assistant, user_proxy, graph, blocks


async def test_an_agent_program_that_cannot_tell_gives_no_types() -> None:
    failing = (sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    assert await agent_types.discover(failing) == frozenset()
    assert await agent_types.discover(("/nonexistent/agentd",)) == frozenset()
    slow = (sys.executable, "-c", "import time; time.sleep(30)")
    assert await asyncio.wait_for(agent_types.discover(slow, timeout=0.5), 10) == frozenset()


def test_the_setting_parses_names_and_ignores_the_rest() -> None:
    assert agent_types.configured("") is None and agent_types.configured("  ") is None
    assert agent_types.configured("echo, git,Bad Name,../x") == frozenset({"echo", "git"})


async def test_the_agent_types_setting_is_what_the_daemon_routes(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--agent-types", "echo").start()
    async with d.client() as c:
        final = await run_task(c, Command("echo", Action.RUN, "hi"))
        assert final.result is not None and final.result.output == "hi"
        with pytest.raises(ClientError) as ei:
            await run_task(c, Command("git", Action.RUN, "x"))
    assert ei.value.code == "NOT_FOUND" and "known types: echo" in str(ei.value)
