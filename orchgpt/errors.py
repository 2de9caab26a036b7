"""One exception root for the orchgpt package."""

from __future__ import annotations


class OrchgptError(Exception):
    """Root of every error orchgpt raises on purpose."""


class ConfigError(OrchgptError):
    """A setting is missing or malformed."""


class CertError(OrchgptError):
    """A certificate or key is missing, unreadable or not signed by the mesh CA."""


class StoreError(OrchgptError):
    """The durable store cannot be opened or written."""


class RoutingError(OrchgptError):
    """Work cannot be routed (unknown agent type, no such agent or task)."""

    def __init__(self, message: str, code: str = "NOT_FOUND") -> None:
        super().__init__(message)
        self.code = code


class ClientError(OrchgptError):
    """A client call to the orchestrator failed; the message says why.

    ``code`` is the gRPC status name (UNAVAILABLE, NOT_FOUND, ...).
    """

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code
