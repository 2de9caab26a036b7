"""Heartbeat intervals that grow with the number of agents, and the one periodic sweep.

Every agent is told its interval in REGISTERED. Up to ``AGENTS_PER_INTERVAL`` connected agents
it is the configured one (``heartbeat_interval``); past that it grows in proportion, so that
the daemon handles about ``AGENTS_PER_INTERVAL`` heartbeats per configured interval however
many agents are idle (10,000 agents: 20 times the interval; a silent agent is then found
later, while a closed connection is still seen at once by the transport). An agent keeps the
interval it was given until it reconnects.

The daemon runs one sweep per configured interval (orchgpt.server), not a timer per agent:
each agent is pinged when its own interval has passed (and the link skips the PING when
anything else was sent to it meanwhile: any traffic counts as life), and it is dropped when
silent for ``heartbeat_misses`` of its intervals.
"""

from __future__ import annotations

AGENTS_PER_INTERVAL = 500


def interval_for(base: float, agents: int, per_interval: int = AGENTS_PER_INTERVAL) -> float:
    """The heartbeat interval announced to an agent registering while ``agents`` are connected
    (itself included)."""
    return base * max(1.0, agents / per_interval)


def ping_due(since_ping: float, interval: float, base: float) -> bool:
    """Is an agent last pinged ``since_ping`` seconds ago due for a PING at this sweep? The sweep
    runs every ``base`` seconds, so an agent is pinged at the sweep nearest its interval."""
    return since_ping >= interval - base / 2
