"""gRPC server reflection, both `grpc.reflection.v1` and the older `grpc.reflection.v1alpha`.

grpcio-reflection ships only v1alpha. The v1 service is the same protocol under another
package (the messages are identical on the wire), so the v1alpha servicer answers both:
v1 is registered under its own name, and a v1 copy of the reflection descriptor is added
to the pool so that clients can describe it too.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(fdp)
    old = fdp.package
    fdp.name, fdp.package = V1_FILE, V1_PACKAGE
    fdp.options.Clear()
    for msg in fdp.message_type:
        for f in msg.field:
            if f.type_name:
                f.type_name = f.type_name.replace(f".{old}.", f".{V1_PACKAGE}.")
    for svc in fdp.service:
        for m in svc.method:
            m.input_type = m.input_type.replace(f".{old}.", f".{V1_PACKAGE}.")
            m.output_type = m.output_type.replace(f".{old}.", f".{V1_PACKAGE}.")
    pool.AddSerializedFile(fdp.SerializeToString())


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> tuple[str, ...]:
    """Serve reflection (v1 and v1alpha) for ``service_names``; returns every name listed."""
    names = (*service_names, V1_SERVICE, V1ALPHA_SERVICE)
    _add_v1_descriptor(descriptor_pool.Default())
    reflection.enable_server_reflection(names, server)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
                response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    return names
