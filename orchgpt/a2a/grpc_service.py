"""A2A's gRPC binding (lf.a2a.v1.A2AService) on the daemon's mutual-TLS Mesh port.

a2a-sdk's GrpcHandler over the same MeshRequestHandler as the JSON-RPC listener; the identity
is the peer certificate's (orchgpt.tls.peer_identity, as for the Mesh service) and the tenant
(the agent type) is each request's ``tenant`` field.
"""

from __future__ import annotations

from typing import Any

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.grpc_handler import (
    DefaultGrpcServerCallContextBuilder,
    GrpcHandler,
)
from a2a.types import a2a_pb2, a2a_pb2_grpc

from .. import logs
from ..errors import CertError
from ..tls import peer_identity
from .handler import IDENTITY, MeshRequestHandler

log = logs.get("orchgpt.a2a")

SERVICE_NAME = a2a_pb2.DESCRIPTOR.services_by_name["A2AService"].full_name


class _ContextBuilder(DefaultGrpcServerCallContextBuilder):
    def build(self, context: grpc.aio.ServicerContext) -> ServerCallContext:
        ctx = super().build(context)
        try:
            ctx.state[IDENTITY] = peer_identity(context)
        except CertError as exc:
            log.warning("a2a_certificate_refused", error=str(exc))
        return ctx


def add_a2a_service(handler: MeshRequestHandler, server: Any) -> None:
    """Serve A2AService on ``server`` (before it starts)."""
    servicer = GrpcHandler(handler, context_builder=_ContextBuilder())
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(servicer, server)
