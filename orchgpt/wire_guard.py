"""Decoding and first checks of every Mesh request, before the servicer runs.

The generated registration (iac_pb2_grpc.add_MeshServicer_to_server) deserializes
requests with ``FromString``: undecodable bytes then fail inside gRPC and the caller
gets UNKNOWN "Unexpected <class 'DecodeError'>". Here the same registration is run
against a recording stand-in for the server; its handlers are re-registered with
deserializers that never raise (a bad frame becomes a ``Malformed`` value) and with
behaviours that answer INVALID_ARGUMENT naming the message, or the field that
``validate.request`` refuses, before the servicer's method is called.

A unary answer also waits for the commit of the writes made before it (group commit,
orchgpt/durable.py): nothing is acknowledged before it is durable; a failed commit answers
UNAVAILABLE. Streams wait in their Outbox (orchgpt/wire/batching.py).

The Connect stream reads its frames itself (context.read()): a ``Malformed`` frame is
answered there with an ERROR envelope and the stream is kept (see servicer._read_agent).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc

from . import durable, validate
from .iac.v1 import iac_pb2_grpc as pb_grpc

SERVICE = "orchgpt.iac.v1.Mesh"


class Malformed:
    """A request frame that does not decode as its message type."""

    __slots__ = ("error", "message")
    envelopes = ()  # a Batch-shaped nothing, for code that reads a frame before checking it

    def __init__(self, message: str, error: str) -> None:
        self.message = message
        self.error = error

    @property
    def detail(self) -> str:
        return f"malformed {self.message}: the bytes do not decode as orchgpt.iac.v1.{self.message} ({self.error})"


def lenient(from_string: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    name = getattr(from_string, "__self__", None)
    message = name.DESCRIPTOR.name if name is not None else "message"

    def decode(data: bytes) -> Any:
        try:
            return from_string(data)
        except Exception as exc:  # google.protobuf.message.DecodeError, and anything odd
            return Malformed(message, str(exc) or type(exc).__name__)

    return decode


async def _refuse(request: Any, method: str, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
    bad = validate.request(method, request)
    if bad:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad)


def _guard_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(request, method, context)
        answer = await behavior(request, context)
        if durable._open:
            await committed(context)
        return answer

    return guarded


async def committed(context: grpc.aio.ServicerContext) -> None:
    """Wait for the open group-commit window; a failed commit aborts the RPC with UNAVAILABLE."""
    try:
        await durable.settle()
    except Exception as exc:  # the store's error
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"not acknowledged: the store could not commit: {exc}")


def _guard_server_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):

        async def guarded_co(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _refuse(request, method, context)
            return await behavior(request, context)

        return guarded_co

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(request, method, context)
        async for item in behavior(request, context):
            yield item

    return guarded


def guard(method: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The handler with a never-raising deserializer and a checking behaviour."""
    de = lenient(h.request_deserializer) if h.request_deserializer else None
    if h.unary_unary is not None:
        return h._replace(request_deserializer=de, unary_unary=_guard_unary(method, h.unary_unary))
    if h.unary_stream is not None:
        return h._replace(request_deserializer=de, unary_stream=_guard_server_stream(method, h.unary_stream))
    # streaming requests (Connect) check each frame themselves
    return h._replace(request_deserializer=de)


class _Recorder:
    """Stands in for the server while the generated code registers its handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers come again below, by name

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers[service] = dict(handlers)


def add_mesh_servicer(
    servicer: Any, server: grpc.aio.Server, register: Callable[[Any, Any], None] = pb_grpc.add_MeshServicer_to_server
) -> None:
    """The generated ``register`` (iac_pb2_grpc.add_MeshServicer_to_server), with the guard on
    every method."""
    rec = _Recorder()
    register(servicer, rec)
    for service, handlers in rec.handlers.items():
        guarded = {m: guard(m, h) for m, h in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, guarded),))
        if hasattr(server, "add_registered_method_handlers"):
            server.add_registered_method_handlers(service, guarded)
