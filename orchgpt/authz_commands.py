"""Open agent-to-agent COMMANDs, the state behind authz's rule `reply-answers-a-command`: a
REPLY(payload) is forwarded only to the agent that asked, only from the agent that was asked,
and only once. (Part of the one authorization module: ``orchgpt.authz.OpenCommands``.)"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .authz_decision import Decision, deny

_REPLY_OK = Decision(True, "reply-answers-a-command", route="agents")


class OpenCommands:
    """COMMANDs forwarded to an agent and not answered yet: a REPLY(payload) is forwarded only
    to the agent that asked, only from the agent that was asked, and only once.

    Bounded: an entry expires after ``ttl`` seconds; an agent has at most ``max_per_agent`` open
    COMMANDs (asking more forgets its oldest, whose answer is then refused) and all agents
    together ``max_total`` (the oldest is forgotten first)."""

    def __init__(
        self,
        ttl: float = 300.0,
        max_per_agent: int = 1024,
        max_total: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_per_agent = max_per_agent
        self.max_total = max_total
        self.clock = clock
        self._open: OrderedDict[str, tuple[str, str, float]] = OrderedDict()  # id -> asker, dest, t
        self._by_asker: dict[str, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def _drop(self, command_id: str) -> None:
        entry = self._open.pop(command_id, None)
        if entry is not None:
            mine = self._by_asker.get(entry[0])
            if mine is not None:
                mine.pop(command_id, None)  # an empty one is kept until its agent leaves

    def _expire(self) -> None:
        if not self._open:
            return
        limit = self.clock() - self.ttl
        while self._open:
            cid, (_, _, t) = next(iter(self._open.items()))
            if t > limit and len(self._open) <= self.max_total:
                break
            self._drop(cid)

    def opened(self, command_id: str, asker: str, dest: str) -> None:
        """A COMMAND was forwarded from ``asker`` to ``dest``."""
        if not command_id or command_id in self._open:
            return
        mine = self._by_asker.get(asker)
        if mine is None:
            mine = self._by_asker[asker] = OrderedDict()
        elif len(mine) >= self.max_per_agent:
            self._drop(next(iter(mine)))
        self._open[command_id] = (asker, dest, self.clock())
        mine[command_id] = None
        self._expire()

    def answer(self, correlation_id: str, replier: str, recipient: str) -> Decision:
        """A REPLY(payload) from ``replier`` to ``recipient``: allowed (and forgotten) when it
        answers an open COMMAND that ``recipient`` sent to ``replier``."""
        self._expire()
        entry = self._open.get(correlation_id)
        if entry is None or entry[0] != recipient or entry[1] != replier:
            return deny(
                "reply-answers-a-command",
                f"a REPLY to {recipient!r} must answer an unanswered COMMAND that "
                f"{recipient!r} sent to {replier!r} (correlation_id); message dropped",
            )
        self._drop(correlation_id)
        return _REPLY_OK

    def forget_agent(self, agent_id: str) -> None:
        """An agent left: its open COMMANDs can no longer be answered to it."""
        for cid in [c for c, (a, d, _) in self._open.items() if agent_id in (a, d)]:
            self._drop(cid)
        self._by_asker.pop(agent_id, None)
