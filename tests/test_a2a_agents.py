"""External A2A agents in the mesh: agentd's A2A proxy, started by hand or by the daemon
(docs/a2a.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a

from tests.support.a2a_calls import start_proxy, start_upper
from tests.support.mesh import await_for, wait_for

pytestmark = pytest.mark.timeout(90)


async def test_an_external_a2a_agent_joins_the_mesh(daemon_factory, tmp_path: Path) -> None:
    from orchgpt.models import Action, ApprovalDecision, ApprovalResponse, Command, EventKind

    upper, url = start_upper(tmp_path)
    d = daemon_factory().start()
    proxy = start_proxy(d, url, tmp_path)
    try:
        async with d.client() as mesh:

            async def registered() -> bool:
                assert proxy.poll() is None, (tmp_path / "proxy.log").read_text()
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 20, what="the proxy agent to register")
            [info] = await mesh.list_agents("upper")
            assert "shout" in info.capabilities  # the card's skills

            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "hello"))]
            result = events[-1].result
            assert result is not None and result.ok and result.output == "HELLO"
            # the two streamed updates; a watcher that is behind gets them coalesced into one event
            tokens = [e for e in events if e.kind == EventKind.TOKEN]
            assert "".join(e.text for e in tokens) == "HELLO" and 1 <= len(tokens) <= 2
            assert "upper-casing" in [e.text for e in events if e.kind == EventKind.LOG]

            # INPUT_REQUIRED becomes an approval request; its feedback is the next A2A message
            seen = []
            async for ev in mesh.submit(Command("upper", Action.RUN, "ask")):
                seen.append(ev)
                if ev.kind == EventKind.APPROVAL and ev.approval is not None:
                    assert ev.text == "what shall I shout?"
                    await mesh.approve(
                        ev.task_id,
                        ApprovalResponse(
                            ev.approval.request_id,
                            ApprovalDecision.FEEDBACK,
                            feedback="quiet please",
                        ),
                    )
            assert seen[-1].result is not None and seen[-1].result.output == "QUIET PLEASE"

            # a mesh CANCEL cancels the remote task too
            async for ev in mesh.submit(Command("upper", Action.RUN, "slow")):
                if ev.text == "sleeping":
                    await mesh.cancel(ev.task_id)
            assert ev.result is not None and ev.result.state == "cancelled"
        async with httpx.AsyncClient(timeout=10) as http:
            remote = await create_client(url, ClientConfig(httpx_client=http))

            async def remote_cancelled() -> bool:
                tasks = (await remote.list_tasks(a2a.ListTasksRequest())).tasks
                slow = [t for t in tasks if t.history and t.history[0].parts[0].text == "slow"]
                return bool(slow) and slow[0].status.state == a2a.TASK_STATE_CANCELED

            await await_for(remote_cancelled, 10, what="the remote task to be cancelled")
    finally:
        for p in (proxy, upper):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


async def test_the_daemon_runs_the_proxy_of_a_configured_a2a_agent(daemon_factory, tmp_path: Path) -> None:
    from orchgpt.models import Action, Command

    upper, url = start_upper(tmp_path)
    d = daemon_factory("--a2a-agents", f"upper={url}").start()
    try:
        async with d.client() as mesh:

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 20, what="the daemon's proxy agent to register")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "from config"))]
            assert events[-1].result is not None and events[-1].result.output == "FROM CONFIG"

        def pids() -> list[int]:
            return [json.loads(line)["pid"] for line in d.log().splitlines() if '"a2a_proxy_started"' in line]

        assert len(pids()) == 1
        killed_ms = int(time.time() * 1000)
        os.kill(pids()[0], signal.SIGKILL)  # a proxy that dies is started again
        wait_for(lambda: len(pids()) == 2, 20, what="the proxy to be restarted")
        async with d.client() as mesh:

            async def reconnected() -> bool:
                return any(a.connected_ms >= killed_ms for a in await mesh.list_agents("upper"))

            await await_for(reconnected, 20, what="the restarted proxy to register")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "again"))]
            assert events[-1].result is not None and events[-1].result.output == "AGAIN"
        assert d.stop() == 0
        with pytest.raises(ProcessLookupError):  # stopped with the daemon
            os.kill(pids()[-1], 0)
    finally:
        upper.terminate()
        upper.wait(10)
