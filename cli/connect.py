"""Building the mesh client lazily, and turning its errors into one-line CLI errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import EXIT_TASK_FAILED, CliError, ConnectionProblem

if TYPE_CHECKING:
    from orchgpt.client import MeshClient

# gRPC status codes that mean "the orchestrator is not there (now)": retry.
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})
# ... and those that mean "it is there but will not talk to us".
REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


@dataclass
class ConnectionSettings:
    address: str | None = None
    certs: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


DEFAULT_ADDRESS = "127.0.0.1:8443"


def display_address(s: ConnectionSettings) -> str:
    """The address the client will use (without importing it; it validates later)."""
    import os

    return s.address or os.environ.get("ORCHGPT_ADDRESS") or os.environ.get("ORCHESTRATOR_ADDRESS") or DEFAULT_ADDRESS


def make_client(s: ConnectionSettings) -> MeshClient:
    """Create the client (imports gRPC and protobuf); ConnectionProblem on bad settings."""
    from orchgpt.client import MeshClient
    from orchgpt.errors import OrchgptError

    try:
        return MeshClient.from_env(s.address, s.certs, ca=s.ca, cert=s.cert, key=s.key)
    except OrchgptError as exc:
        raise ConnectionProblem(str(exc)) from None


def code_of(exc: BaseException) -> str:
    return str(getattr(exc, "code", "") or "")


def is_retryable(exc: BaseException) -> bool:
    from orchgpt.errors import ClientError

    return isinstance(exc, ClientError) and code_of(exc) in RETRYABLE


def classify(exc: BaseException) -> CliError:
    """The CLI error for an exception from the client (connection problems exit 3)."""
    from orchgpt.errors import CertError, ClientError, ConfigError

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ConfigError | CertError):
        return ConnectionProblem(str(exc))
    if isinstance(exc, ClientError):
        if code_of(exc) in RETRYABLE | REFUSED:
            return ConnectionProblem(str(exc))
        return CliError(str(exc), EXIT_TASK_FAILED)
    return CliError(f"{type(exc).__name__}: {exc}", EXIT_TASK_FAILED)
