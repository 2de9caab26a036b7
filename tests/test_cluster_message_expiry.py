"""A message for an agent that never comes back (issue 19, orchgpt/cluster_messages.py): a
COMMAND sent across daemons to an agent whose daemon stops before taking it is dropped after
``--cluster-message-ttl`` seconds, and its sender gets an ERROR (UNAVAILABLE) naming the agent,
so that an agentd ``ask`` fails at once with it instead of waiting out its own timeout.

Real daemons on a real PostgreSQL, a real agentd (the vanished agent) and an in-process Link.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from agentd.errors import AskError
from tests.support.mesh import AgentProc, start_agent
from tests.test_cluster_messages import Listener, linked, listed_on

pytestmark = pytest.mark.timeout(60)


async def test_a_command_to_an_agent_that_never_comes_back_gets_an_error_when_it_expires(
    daemon_factory, postgres_url: str, tmp_path: Path, agents: list[AgentProc]
) -> None:  # type: ignore[no-untyped-def]
    a = daemon_factory(
        "--no-spawn", "--cluster", "--store", postgres_url, "--cluster-message-ttl", "1.5", data_dir=tmp_path / "d-a"
    ).start()
    b = daemon_factory("--no-spawn", "--cluster", "--store", postgres_url, data_dir=tmp_path / "d-b").start()
    agents.append(start_agent(b, "echo-ghost"))
    async with linked(a, Listener(), "asker-1", tmp_path) as asker:
        await listed_on(a, "echo-ghost")
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)  # B never takes the message again ...
        try:
            # ... while A still takes B for alive (its heartbeat fresh), so the COMMAND is stored for it
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
                await conn.execute(
                    "UPDATE cluster_daemons SET heartbeat_ms = %s WHERE daemon_id = %s",
                    (int(time.time() * 1000) + 60_000, b.address),
                )
            t0 = time.monotonic()
            with pytest.raises(AskError) as err:
                await asker.ask("echo-ghost", b"anyone?", timeout=20)
            took = time.monotonic() - t0
        finally:
            b.proc.send_signal(signal.SIGKILL)
            b.proc.send_signal(signal.SIGCONT)
    msg = str(err.value)
    assert "UNAVAILABLE" in msg and "'echo-ghost'" in msg and "COMMAND" in msg, msg
    assert 1.0 < took < 15, took  # at its expiry (1.5 s, a tick later), not at the ask's own timeout
    assert "cluster_message_bounced" in a.log()
