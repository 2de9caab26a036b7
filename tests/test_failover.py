"""Agents and clients given several daemons (``A,B``) fail over to the next one (issue 19).

Two real daemons (mutual TLS, their own stores), hand-started agentd subprocesses and the
real MeshClient: the first daemon is down (stopped before, or SIGKILLed under the agent).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from orchgpt.addresses import AddressRing, parse_addresses
from orchgpt.client import MeshClient
from orchgpt.errors import ClientError, ConfigError
from orchgpt.models import Command, EventKind
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent

pytestmark = pytest.mark.timeout(90)


def two_daemons(daemon_factory, tmp_path: Path) -> tuple[Daemon, Daemon]:  # type: ignore[no-untyped-def]
    a = daemon_factory("--no-spawn", data_dir=tmp_path / "data-a").start()
    b = daemon_factory("--no-spawn", data_dir=tmp_path / "data-b").start()
    return a, b


async def agent_ids(d: Daemon) -> set[str]:
    async with d.client() as c:
        return {a.agent_id for a in await asyncio.wait_for(c.list_agents(), 10)}


async def run_echo(client: MeshClient, text: str) -> str:
    out = ""
    async for ev in client.submit(Command("echo", input=text)):
        if ev.kind == EventKind.RESULT and ev.result is not None:
            assert ev.result.ok, ev.result.error
            out = ev.result.output
    return out


def test_address_lists_parse_and_name_the_bad_entry() -> None:
    assert parse_addresses("127.0.0.1:1, [::1]:2,127.0.0.1:1") == ["127.0.0.1:1", "[::1]:2"]
    with pytest.raises(ConfigError, match="malformed address 'nope'"):
        parse_addresses("127.0.0.1:1,nope")
    with pytest.raises(ConfigError, match="no empty entry"):
        parse_addresses("127.0.0.1:1,")
    ring = AddressRing("a:1,b:2")
    assert ring.current == "a:1" and ring.advance() == "b:2" and not ring.round_done()
    assert ring.advance() == "a:1" and ring.round_done()
    ring.succeeded()
    assert not ring.round_done()


async def test_agent_registers_on_the_second_daemon_when_the_first_is_down(
    daemon_factory, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two_daemons(daemon_factory, tmp_path)
    a.stop()
    agents.append(start_agent(b, "e1", extra_args=["--orchestrator", f"{a.address},{b.address}"]))
    await await_for(lambda: agent_ids(b), timeout=20, what="the agent on the second daemon")
    assert "e1" in await agent_ids(b)
    async with b.client() as c:
        assert await asyncio.wait_for(run_echo(c, "second"), 20) == "second"


async def test_agent_moves_to_the_second_daemon_when_the_first_is_killed(
    daemon_factory, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two_daemons(daemon_factory, tmp_path)
    agent = start_agent(a, "e2", extra_args=["--orchestrator", f"{a.address},{b.address}"])
    agents.append(agent)
    await await_for(lambda: agent_ids(a), timeout=20, what="the agent on the first daemon")
    assert await agent_ids(b) == set()
    a.stop(signal.SIGKILL)
    await await_for(lambda: agent_ids(b), timeout=20, what="the agent on the second daemon")
    assert "e2" in await agent_ids(b)
    assert f'"orchestrator": "{b.address}"' in agent.log() or b.address in agent.log()
    async with b.client() as c:
        assert await asyncio.wait_for(run_echo(c, "moved"), 20) == "moved"


async def test_client_uses_the_next_daemon_when_the_first_is_down(
    daemon_factory, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a, b = two_daemons(daemon_factory, tmp_path)
    agents.append(start_agent(b, "e3"))
    await await_for(lambda: agent_ids(b), timeout=20, what="the agent")
    a.stop()
    cli = b.client()
    async with MeshClient(f"{a.address},{b.address}", cli.certs, timeout=5) as c:
        assert c.address == a.address
        assert {x.agent_id for x in await c.list_agents()} == {"e3"}
        assert c.address == b.address  # it stays on the daemon that answered
        assert await asyncio.wait_for(run_echo(c, "across"), 20) == "across"
    await cli.close()
    async with MeshClient(f"{a.address},{a.address.replace(str(a.port), '1')}", cli.certs, timeout=5) as c:
        with pytest.raises(ClientError) as err:  # all down: the last one's error, UNAVAILABLE
            await c.list_agents()
        assert err.value.code == "UNAVAILABLE"
