"""Which envelopes an agent may send, to whom, and which it accepts (orchgpt.authz exports all of
it): the envelope table, the rules that read it, and the agent-to-agent COMMANDs awaiting their
REPLY."""

from __future__ import annotations

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
