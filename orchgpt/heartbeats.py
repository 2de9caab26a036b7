"""Heartbeat intervals that follow the number of agents, and the one periodic sweep.

Every agent is told its interval in REGISTERED. Up to ``agents_per_interval`` (default
``AGENTS_PER_INTERVAL``) connected agents it is the configured one (``heartbeat_interval``);
past that it grows in proportion, so that the daemon handles about ``agents_per_interval``
heartbeats per configured interval however many agents are idle (10,000 agents: 20 times the
interval; a silent agent is then found later, while a closed connection is still seen at once
by the transport).

Heartbeats go one way (docs/protocol.md §5): an agent whose HEARTBEATs carry
``heartbeat_interval_ms`` ("watches": agentd does) checks the daemon with PINGs of its own (after
1.5 silent intervals; the daemon's PONG answers them), so the daemon sends it no routine PING:
1.5 messages an idle agent an interval instead of 2, half of them fewer writes for the daemon.
Older agents are still pinged every interval by the sweep (their watchdog needs it).

The interval is re-announced when the number of agents has changed by ``RESCALE`` or more since
an agent's interval was set (after a mass connect the early agents would otherwise stay on short
intervals: about 400 messages/s at 10,000 agents instead of 100). The announcement is a PING:
``Ping.heartbeat_interval_ms`` = "from now on, heartbeat this often". An agent that adopts it
says so in its next HEARTBEAT (a watching agent: no PING/PONG pair) or, to an older daemon, with
a PING of its own carrying the same value. Agents that ignore the field stay safe, by this rule:

- the daemon pings an agent every ``min(acknowledged, offered)`` (an older agent's watchdog is
  fed whichever interval it uses; a watching agent gets only the announcement);
- it counts an agent silent after ``heartbeat_misses`` × ``max(acknowledged, offered, grace)``:
  an agent that ignores the offer is judged by the interval it acknowledged (REGISTERED's),
  one that adopted it is never judged by a shorter one it has not confirmed;
- ``grace``: when an agent acknowledges a shorter interval, or an outstanding offer is replaced
  before it was acknowledged, the longer one still counts for ``heartbeat_misses`` of it (the
  agent may be in the middle of a sleep of the old length).

The daemon runs one sweep per configured interval (orchgpt.server), not a timer per agent, and
the sweep does not iterate every agent: a ``Wheel`` files each agent under the sweep that is
due to look at it (its next PING, or the moment it would be silent too long). An agent is pinged
when its own interval has passed (and the link skips the PING when anything else was sent to it
meanwhile: any traffic counts as life for the agent's watchdog), and dropped when silent as above.
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar

AGENTS_PER_INTERVAL = 500
RESCALE = 2.0  # re-announce when the wanted interval is this many times longer or shorter

T = TypeVar("T")


class Beat(Protocol):
    """What the sweep keeps of an agent's heartbeat (mesh_registry.AgentEntry)."""

    interval: float  # the interval the agent acknowledged (REGISTERED's, then its PING's)
    offered: float  # an interval announced and not yet acknowledged (0: none)
    grace: float  # a longer interval that still counts for silence until grace_until
    grace_until: float


def interval_for(base: float, agents: int, per_interval: int = AGENTS_PER_INTERVAL) -> float:
    """The heartbeat interval wanted while ``agents`` are connected (announced in REGISTERED
    to an agent registering, itself included)."""
    return base * max(1.0, agents / max(1, per_interval))


def ping_due(since_ping: float, interval: float, base: float) -> bool:
    """Is an agent last pinged ``since_ping`` seconds ago due for a PING at this sweep? The sweep
    runs every ``base`` seconds, so an agent is pinged at the sweep nearest its interval."""
    return since_ping >= interval - base / 2


def cadence(b: Beat) -> float:
    """How often the daemon pings the agent: the shorter of what it acknowledged and was offered."""
    return min(b.interval, b.offered) if b.offered else b.interval


def silence_limit(b: Beat, now: float, misses: int) -> float:
    """Seconds of silence after which the agent is dropped (the rule in the module docstring)."""
    longest = max(b.interval, b.offered, b.grace if now < b.grace_until else 0.0)
    return longest * misses


def _off(current: float, wanted: float) -> bool:
    return wanted >= current * RESCALE or wanted * RESCALE <= current


def offer(b: Beat, wanted: float, now: float, misses: int) -> float:
    """The interval to announce in the PING now due (0: none), updating ``b.offered``.

    An offer is made when ``wanted`` differs from the acknowledged interval by ``RESCALE`` or
    more, and repeated with each PING until acknowledged. An outstanding offer that no longer
    fits is replaced (by the acknowledged interval itself when that fits again: the agent may
    have adopted the old offer), its length kept as grace."""
    new = wanted if _off(b.interval, wanted) else (b.interval if b.offered else 0.0)
    if b.offered and abs(new - b.offered) > 0.0005:
        _keep(b, b.offered, now, misses)
    b.offered = new
    return new


def acknowledged(b: Beat, interval: float, now: float, misses: int) -> bool:
    """The agent says it now heartbeats every ``interval`` s: adopted when it is the outstanding
    offer (anything else is ignored: an agent cannot choose its own interval)."""
    if not b.offered or abs(interval - b.offered) > 0.0005:
        return False
    if b.offered < b.interval:
        _keep(b, b.interval, now, misses)
    b.interval, b.offered = b.offered, 0.0
    return True


def _keep(b: Beat, longer: float, now: float, misses: int) -> None:
    if now >= b.grace_until:
        b.grace = 0.0
    b.grace = max(b.grace, longer)
    b.grace_until = max(b.grace_until, now + longer * misses)


class Wheel(Generic[T]):
    """Items filed under the moment they are due, in slots one tick wide. A sweep at ``now`` takes
    every item due by ``now`` + half a tick (the sweep nearest its moment, like ``ping_due``):
    whole slots before that edge, and from the slot holding the edge only the items due by it.
    An item is filed once per look (the caller files it again), so a sweep costs what is due
    (plus one slot), not what is held."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._slots: dict[int, list[tuple[float, T]]] = {}
        self._done = -(2**62)  # every slot up to this one has been taken whole

    def __len__(self) -> int:
        return sum(len(v) for v in self._slots.values())

    def add(self, item: T, at: float) -> None:
        """File ``item`` for the moment ``at`` (one already past: the next sweep takes it)."""
        k = max(math.floor(at / self.tick), self._done + 1)
        slot = self._slots.get(k)
        if slot is None:
            self._slots[k] = [(at, item)]
        else:
            slot.append((at, item))

    def due(self, now: float) -> list[T]:
        """Take every item due by ``now`` + half a tick."""
        edge = now + self.tick / 2
        last = math.floor(edge / self.tick)
        out: list[T] = []
        for k in sorted(k for k in self._slots if k < last):
            out.extend(item for _, item in self._slots.pop(k))
        slot = self._slots.pop(last, None)
        if slot:
            keep = [p for p in slot if p[0] > edge]
            out.extend(item for at, item in slot if at <= edge)
            if keep:
                self._slots[last] = keep
        self._done = max(self._done, last - 1)
        return out
