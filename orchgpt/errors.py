"""One exception root for the orchgpt package, and the codes its errors carry.

Every error orchgpt raises on purpose is an `OrchgptError` with a `code`: an `ErrorCode`, named
after the gRPC status it becomes on the wire (`orchgpt.status.to_grpc` is the one mapping).
This module does not import grpc: domain code raises and compares codes without the transport.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why an operation failed: the gRPC status names, without OK.

    A `StrEnum`, so that a code compares equal to its name (``code == "NOT_FOUND"``) and is its
    name in logs, f-strings and protobuf string fields, as the plain strings it replaces were."""

    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"

    @classmethod
    def of(cls, code: ErrorCode | str) -> ErrorCode:
        """The code named ``code`` (a gRPC status name, e.g. "NOT_FOUND"); ValueError naming the
        accepted names for anything else."""
        if isinstance(code, ErrorCode):
            return code
        try:
            return cls(code)
        except ValueError:
            raise ValueError(f"unknown error code {code!r}: use one of {', '.join(c.value for c in cls)}") from None


class OrchgptError(Exception):
    """Root of every error orchgpt raises on purpose; ``code`` says what kind of failure it is.

    Each subclass has its default code; ``code`` (an ErrorCode or its name) overrides it."""

    code: ErrorCode = ErrorCode.UNKNOWN

    def __init__(self, message: str = "", code: ErrorCode | str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = ErrorCode.of(code)


class ConfigError(OrchgptError):
    """A setting is missing or malformed."""

    code = ErrorCode.INVALID_ARGUMENT


class CertError(OrchgptError):
    """A certificate or key is missing, unreadable or not signed by the mesh CA."""

    code = ErrorCode.UNAUTHENTICATED


class StoreError(OrchgptError):
    """The durable store cannot be opened or written."""

    code = ErrorCode.UNAVAILABLE


class RoutingError(OrchgptError):
    """Work cannot be routed (unknown agent type, no such agent or task)."""

    def __init__(self, message: str, code: ErrorCode | str = ErrorCode.NOT_FOUND) -> None:
        super().__init__(message, code)


class ClientError(OrchgptError):
    """A client call to the orchestrator failed; the message says why.

    ``code`` is the gRPC status of the call (UNAVAILABLE, NOT_FOUND, ...).
    """

    def __init__(self, message: str, code: ErrorCode | str = ErrorCode.UNKNOWN) -> None:
        super().__init__(message, code)
