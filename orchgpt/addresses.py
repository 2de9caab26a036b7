"""A list of daemon addresses to fail over between (issue 19).

``--orchestrator A,B,C`` (or ``ORCHGPT_ADDRESS=A,B,C``) names several daemons of one mesh:
agentd and the clients use the first that answers and move on to the next one when it
stops answering, round and round. A single address is a list of one.
"""

from __future__ import annotations

from .errors import ConfigError
from .tls import parse_address


def parse_addresses(spec: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` as a list; ConfigError naming the bad entry.

    Duplicates are dropped (the first place counts); an empty entry is an error."""
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise ConfigError(f"malformed address list {spec!r}: expected HOST:PORT[,HOST:PORT...] with no empty entry")
    out: list[str] = []
    for p in parts:
        parse_address(p)  # ConfigError naming the entry
        if p not in out:
            out.append(p)
    return out


class AddressRing:
    """The addresses in order and the one in use; ``advance`` moves to the next (cyclic)."""

    def __init__(self, spec: str | list[str]) -> None:
        self.addresses = parse_addresses(spec) if isinstance(spec, str) else list(spec)
        if not self.addresses:
            raise ConfigError("no orchestrator address given")
        self.index = 0
        self.failures = 0  # consecutive failed attempts since the last success

    @property
    def current(self) -> str:
        return self.addresses[self.index]

    def __len__(self) -> int:
        return len(self.addresses)

    def advance(self) -> str:
        """After a failure: the next address (the same one when there is only one)."""
        self.failures += 1
        self.index = (self.index + 1) % len(self.addresses)
        return self.current

    def succeeded(self) -> None:
        self.failures = 0

    def round_done(self) -> bool:
        """True when every address has failed since the last success (time to back off)."""
        return self.failures > 0 and self.failures % len(self.addresses) == 0
