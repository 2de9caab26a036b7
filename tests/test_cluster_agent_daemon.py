"""AgentInfo.daemon (issue 19): the CLI's /agents table names each agent's daemon when some
agent of the listing is on another daemon than the one the CLI talks to, and marks a daemon
that stopped answering."""

from __future__ import annotations

from cli.agents import agent_table
from orchgpt.models import AgentInfo, AgentState


def test_the_agents_table_has_a_daemon_column_only_for_a_cluster() -> None:
    here = "127.0.0.1:1"
    mine = AgentInfo("echo-1", "echo", host="vm", daemon=here)
    heads, rows = agent_table([mine], here)
    assert "DAEMON" not in heads and rows[0][4] == "vm"
    other = AgentInfo("echo-2", "echo", host="vm2", daemon="127.0.0.1:2")
    lost = AgentInfo("echo-3", "echo", host="vm3", state=AgentState.LOST, daemon="127.0.0.1:3")
    heads, rows = agent_table([lost, other, mine], here)
    assert heads[-1] == "DAEMON"
    assert [(r[1], r[4], r[-1]) for r in rows] == [
        ("echo-1", "vm", here),
        ("echo-2", "vm2", "127.0.0.1:2"),
        ("echo-3", "vm3", "127.0.0.1:3 (not answering)"),
    ]
