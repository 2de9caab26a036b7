"""An authorization decision (orchgpt.authz): allowed or refused, with the rule that said so."""

from __future__ import annotations

from dataclasses import dataclass

# The sender of every envelope the daemon itself issues; agentd accepts control messages
# (RUN, CANCEL, TERMINATE, APPROVAL_RESPONSE, REGISTERED, a delegation's REPLY) only from it.
# No certificate can carry this name (orchgpt.certs.check_issuable_name, and Connect refuses it).
DAEMON = "orchgpt"


@dataclass(frozen=True)
class Decision:
    """The answer to "may this happen?": refused decisions name the rule that refused."""

    allowed: bool
    rule: str
    message: str = ""
    code: str = "OK"  # a grpc.StatusCode name for a refusal: PERMISSION_DENIED, NOT_FOUND, ...
    route: str = ""  # envelopes only: "daemon" (handled by orchgpt) or "agents" (forwarded)

    def __bool__(self) -> bool:
        return self.allowed


def allow(rule: str, route: str = "") -> Decision:
    return Decision(True, rule, route=route)


def deny(rule: str, message: str, code: str = "PERMISSION_DENIED") -> Decision:
    return Decision(False, rule, f"{message} (rule {rule})", code)
