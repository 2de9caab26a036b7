"""ErrorCode <-> grpc.StatusCode: the one place an error's code becomes a gRPC status.

The codes are the gRPC status names (orchgpt.errors.ErrorCode), so the mapping is by name,
built once here and checked for every code by tests/test_error_codes.py.
"""

from __future__ import annotations

import grpc

from .errors import ErrorCode

_TO_GRPC: dict[ErrorCode, grpc.StatusCode] = {c: grpc.StatusCode[c.value] for c in ErrorCode}
_FROM_GRPC: dict[grpc.StatusCode, ErrorCode] = {s: c for c, s in _TO_GRPC.items()}


def to_grpc(code: ErrorCode | str) -> grpc.StatusCode:
    """The gRPC status of a code (or of its name); UNKNOWN for a name that is no code, so that an
    error being reported is never replaced by another one."""
    try:
        return _TO_GRPC[ErrorCode.of(code)]
    except ValueError:
        return grpc.StatusCode.UNKNOWN


def from_grpc(status: grpc.StatusCode) -> ErrorCode:
    """The code of a failed call's status (OK is no failure: ValueError)."""
    try:
        return _FROM_GRPC[status]
    except KeyError:
        raise ValueError(f"{status.name} is not an error status") from None
