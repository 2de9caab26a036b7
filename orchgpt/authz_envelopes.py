"""Which envelopes an agent may send, to whom, and which it accepts (orchgpt.authz exports all of
it): the envelope table, the rules that read it, and the agent-to-agent COMMANDs awaiting their
REPLY."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from .authz_decision import DAEMON, Decision, allow, deny

# Kinds: the MessageType name, with REPLY split by its body: REPLY(result) carries a task's
# result to the daemon (body `reply`), REPLY(payload) answers an agent's COMMAND (body `payload`).
TARGETS = ("agent_id", "agent_type", "broadcast")


@dataclass(frozen=True)
class EnvelopeRule:
    kind: str
    to_daemon: bool  # an agent may send it to the daemon (recipient empty)
    to_agents: tuple[str, ...]  # recipient targets an agent may address it to (forwarded)
    from_daemon: bool  # the daemon sends it to agents (agentd accepts it only from DAEMON)
    note: str = ""


ENVELOPE_TABLE: tuple[EnvelopeRule, ...] = (
    EnvelopeRule("REGISTER", True, (), False, "first envelope of Connect only"),
    EnvelopeRule("REGISTERED", False, (), True, "answer to REGISTER"),
    EnvelopeRule("HEARTBEAT", True, (), False),
    EnvelopeRule("PING", True, (), True),
    EnvelopeRule("PONG", True, (), True),
    EnvelopeRule("TASK_EVENT", True, (), False, "events of the sender's own running task"),
    EnvelopeRule("REPLY(result)", True, (), True, "agent: its task's result; daemon: a delegated sub-task's result"),
    EnvelopeRule("DELEGATE_TASK", True, (), False, "under the sender's own running task"),
    EnvelopeRule("RUN_REFUSED", True, (), False, "an agent declines a RUN it was sent"),
    EnvelopeRule("ERROR", True, (), True, "an agent's ERROR is logged, never answered"),
    EnvelopeRule("RUN", False, (), True),
    EnvelopeRule("CANCEL", False, (), True),
    EnvelopeRule("TERMINATE", False, (), True),
    EnvelopeRule("APPROVAL_RESPONSE", False, (), True),
    EnvelopeRule(
        "COMMAND", False, ("agent_id", "agent_type"), False, "the daemon remembers it until answered or expired"
    ),
    EnvelopeRule(
        "REPLY(payload)",
        False,
        ("agent_id",),
        False,
        "only to the agent whose COMMAND it answers (correlation_id), once",
    ),
    EnvelopeRule("BROADCAST", False, ("agent_id", "agent_type", "broadcast"), False),
    EnvelopeRule(
        "FILE_TRANSFER",
        True,
        ("agent_id", "agent_type"),
        False,
        "to the daemon: an artifact of a task the sender runs or ran (task_id)",
    ),
    EnvelopeRule(
        "FILE_RESUME", True, (), False, "how much of an upload of a task the sender runs or ran the daemon kept"
    ),
    EnvelopeRule("FILE_RESUME_AT", False, (), True, "answer to FILE_RESUME"),
    EnvelopeRule("APPROVAL_REQUEST", False, (), False, "unused: approvals are TASK_EVENTs"),
    EnvelopeRule("CREATE", False, (), False, "unused"),
)
_RULES = {r.kind: r for r in ENVELOPE_TABLE}
DAEMON_ONLY = tuple(r.kind for r in ENVELOPE_TABLE if r.from_daemon and not r.to_daemon)
# Kinds that always go to the daemon, whatever their recipient says.
_ALWAYS_TO_DAEMON = frozenset({"REGISTER", "HEARTBEAT", "TASK_EVENT", "REPLY(result)", "DELEGATE_TASK"})


def envelope_kind(type_name: str, body: str | None) -> str:
    if type_name == "REPLY":
        return "REPLY(payload)" if body == "payload" else "REPLY(result)"
    return type_name


@lru_cache(maxsize=512)
def from_agent(type_name: str, body: str | None, target: str | None) -> Decision:
    """May an agent send this envelope, and where does it go (Decision.route)?

    ``target`` is the recipient's oneof field (agent_id, agent_type, broadcast, client_id) or
    None for the daemon. The COMMAND/REPLY pairing is checked by `OpenCommands` on top.
    """
    kind = envelope_kind(type_name, body)
    rule = _RULES.get(kind)
    if rule is None:
        return deny("known-kind", f"unknown message type {type_name}", code="INVALID_ARGUMENT")
    if kind in DAEMON_ONLY:
        return deny("daemon-only", f"only the orchestrator sends {kind}; message dropped")
    if kind in _ALWAYS_TO_DAEMON or target is None:
        if rule.to_daemon:
            return allow(f"to-daemon:{kind}", route="daemon")
        return deny("to-daemon-kinds", f"an agent cannot send {kind} to the orchestrator; message dropped")
    if target not in rule.to_agents:
        if not rule.to_agents:
            return deny(
                "agent-to-agent-kinds",
                f"agents may exchange only COMMAND, its REPLY (body payload), BROADCAST and "
                f"FILE_TRANSFER, not {kind}; message dropped",
            )
        return deny(
            "agent-to-agent-targets",
            f"{kind} cannot be addressed by {target} (allowed: {', '.join(rule.to_agents)}); message dropped",
        )
    return allow(f"to-agents:{kind}", route="agents")


def agent_accepts(type_name: str, body: str | None, sender: str) -> Decision:
    """agentd's side: does an envelope that arrived on the stream come from a sender allowed
    to send it? Control kinds come from DAEMON only; forwarded kinds from another agent."""
    kind = envelope_kind(type_name, body)
    rule = _RULES.get(kind)
    if rule is None:
        return deny("known-kind", f"unknown message type {type_name}", code="INVALID_ARGUMENT")
    if sender == DAEMON:
        if rule.from_daemon:
            return allow(f"from-daemon:{kind}")
        return deny("from-daemon-kinds", f"the orchestrator does not send {kind}")
    if rule.to_agents:
        return allow(f"from-agent:{kind}")
    return deny("daemon-only", f"{kind} from {sender!r}: only the orchestrator ({DAEMON}) sends it")


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


def envelope_table_markdown() -> str:
    """The envelope table as docs/security.md shows it (a test keeps the two equal)."""
    lines = [
        "| kind | agent → orchgpt | agent → agent (recipient) | orchgpt → agent | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in ENVELOPE_TABLE:
        lines.append(
            f"| {r.kind} | {'yes' if r.to_daemon else 'no'} | "
            f"{', '.join(r.to_agents) if r.to_agents else 'no'} | "
            f"{'yes' if r.from_daemon else 'no'} | {r.note} |"
        )
    return "\n".join(lines)
