"""Error codes: one root per program, one ErrorCode enum, one mapping to grpc.StatusCode."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from types import ModuleType

import grpc
import pytest

import agentd
import cli  # this checkout's cli/ (orchgpt_cli is the installed one)
import orchgpt
from agentd.errors import AgentdError, AskTimeout, LLMError
from cli.errors import CliError
from orchgpt.a2a.mapping import MappingError
from orchgpt.artifacts import ArtifactError
from orchgpt.errors import (
    CertError,
    ClientError,
    ConfigError,
    ErrorCode,
    OrchgptError,
    RoutingError,
    StoreError,
)
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.mesh import IllegalTransition
from orchgpt.status import from_grpc, to_grpc
from orchgpt.store.migrations import SchemaTooNew
from orchgpt.stream_rules import ProtocolError
from orchgpt.wire.codec import DecodeError

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_maps_to_the_grpc_status_of_its_name(code: ErrorCode) -> None:
    status = to_grpc(code)
    assert isinstance(status, grpc.StatusCode)
    assert status is not grpc.StatusCode.OK
    assert status.name == code.value == code
    assert from_grpc(status) is code
    assert to_grpc(code.value) is status  # by name, as the plain strings were


def test_every_grpc_failure_status_has_a_code_and_ok_has_none() -> None:
    failures = {s for s in grpc.StatusCode if s is not grpc.StatusCode.OK}
    assert {to_grpc(c) for c in ErrorCode} == failures
    with pytest.raises(ValueError, match="OK is not an error status"):
        from_grpc(grpc.StatusCode.OK)


def test_string_codes_convert_and_unknown_names_are_refused() -> None:
    assert ErrorCode.of("PERMISSION_DENIED") is ErrorCode.PERMISSION_DENIED
    assert ErrorCode.of(ErrorCode.ABORTED) is ErrorCode.ABORTED
    with pytest.raises(ValueError, match=r"unknown error code 'NOT_FOUNDD': use one of .*NOT_FOUND"):
        ErrorCode.of("NOT_FOUNDD")
    with pytest.raises(ValueError, match="unknown error code 'OK'"):
        ErrorCode.of("OK")
    # Reporting an error never raises another one: a name that is no code is UNKNOWN on the wire.
    assert to_grpc("NOT_A_CODE") is grpc.StatusCode.UNKNOWN


def test_routing_error_takes_strings_for_compatibility() -> None:
    e = RoutingError("no agent of type 'x'")
    assert e.code is ErrorCode.NOT_FOUND and str(e) == "no agent of type 'x'"
    e = RoutingError("taken", code="ALREADY_EXISTS")
    assert e.code is ErrorCode.ALREADY_EXISTS
    e = RoutingError("not yours", "PERMISSION_DENIED")
    assert e.code is ErrorCode.PERMISSION_DENIED
    # Code that still compares, formats or sends the plain names keeps working.
    assert e.code == "PERMISSION_DENIED" and f"{e.code}: {e}" == "PERMISSION_DENIED: not yours"
    assert json.dumps({"code": e.code}) == '{"code": "PERMISSION_DENIED"}'
    assert getattr(grpc.StatusCode, e.code) is grpc.StatusCode.PERMISSION_DENIED
    assert (
        pb.Error(code=e.code, message=str(e)).SerializeToString()
        == pb.Error(code="PERMISSION_DENIED", message="not yours").SerializeToString()
    )
    with pytest.raises(ValueError, match="unknown error code 'NOPE'"):
        RoutingError("x", "NOPE")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OrchgptError("x"), ErrorCode.UNKNOWN),
        (ConfigError("x"), ErrorCode.INVALID_ARGUMENT),
        (CertError("x"), ErrorCode.UNAUTHENTICATED),
        (StoreError("x"), ErrorCode.UNAVAILABLE),
        (ClientError("x"), ErrorCode.UNKNOWN),
        (ClientError("x", "DEADLINE_EXCEEDED"), ErrorCode.DEADLINE_EXCEEDED),
        (ConfigError("x", ErrorCode.NOT_FOUND), ErrorCode.NOT_FOUND),
        (ArtifactError("x", "PERMISSION_DENIED"), ErrorCode.PERMISSION_DENIED),
        (ProtocolError("INVALID_ARGUMENT", "x"), ErrorCode.INVALID_ARGUMENT),
        (MappingError("x"), ErrorCode.INVALID_ARGUMENT),
        (AgentdError("x"), ErrorCode.UNKNOWN),
        (LLMError("x"), ErrorCode.UNAVAILABLE),
        (AskTimeout("x"), ErrorCode.DEADLINE_EXCEEDED),
        (DecodeError("x"), ErrorCode.INVALID_ARGUMENT),
        (SchemaTooNew("x"), ErrorCode.FAILED_PRECONDITION),
        (IllegalTransition("x"), ErrorCode.INTERNAL),  # a broken invariant: a bug
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_default_and_given_codes(exc: Exception, code: ErrorCode) -> None:
    assert getattr(exc, "code", None) is code
    assert str(exc) == "x"


def test_value_errors_stay_value_errors() -> None:
    # Callers catch these as ValueError (journal lines, bridge messages): they still can.
    assert isinstance(ProtocolError("NOT_FOUND", "x"), ValueError)
    assert isinstance(MappingError("x"), ValueError)
    assert isinstance(DecodeError("x"), ValueError)
    assert isinstance(IllegalTransition("x"), RuntimeError)
    assert isinstance(AskTimeout("x"), TimeoutError)
    assert to_grpc(ProtocolError("NOT_FOUND", "x").code) is grpc.StatusCode.NOT_FOUND


def _modules(pkg: ModuleType) -> list[ModuleType]:
    out = [pkg]
    for info in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}."):
        if ".iac." in info.name or info.name.endswith("__main__"):
            continue
        out.append(importlib.import_module(info.name))
    return out


@pytest.mark.parametrize(
    ("pkg", "root"),
    [(orchgpt, OrchgptError), (agentd, AgentdError), (cli, CliError)],
    ids=["orchgpt", "agentd", "cli"],
)
def test_one_exception_root_per_program(pkg: ModuleType, root: type[Exception]) -> None:
    # Every exception class a module defines, private signals (`_Name`) too. (The sandbox
    # launcher runs as a program of its own, standard library only: it raises OSError.)
    defined = {
        f"{mod.__name__}.{name}": cls
        for mod in _modules(pkg)
        for name, cls in vars(mod).items()
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == mod.__name__
    }
    assert root in defined.values()  # the walk found the modules
    assert sorted(n for n, cls in defined.items() if not issubclass(cls, root)) == []
    if root is not CliError:  # the CLI's errors carry exit codes; the programs' carry ErrorCodes
        assert sorted(n for n, cls in defined.items() if not isinstance(cls.code, ErrorCode)) == []
