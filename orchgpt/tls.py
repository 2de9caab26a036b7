"""gRPC credentials for mutual TLS, and the peer identity of a call."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc

from .certs import CertPaths, Identity, identity_from_pem
from .errors import CertError

# The server certificate's SANs name localhost; an orchestrator reached by IP or
# another name is verified against this name unless the caller overrides it.
DEFAULT_SERVER_NAME = "localhost"


def server_credentials(paths: CertPaths) -> grpc.ServerCredentials:
    """Credentials that require and verify a client certificate from the mesh CA."""
    ca, cert, key = paths.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(paths: CertPaths) -> grpc.ChannelCredentials:
    ca, cert, key = paths.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


# gRPC keepalive of a channel (an agent's, a client's): notices a daemon host gone without a word
# within 70 s. Not shorter: a daemon holds one connection per agent and answers every ping
# (10,000 agents pinging every 20 s cost it ~4 % of a core; bench/RESULTS-issue17.md, session 4);
# a hung daemon is the agent's own watch (agentd/heartbeat.py).
KEEPALIVE_MS = 60_000


def channel_options(
    target: str, server_name: str | None = None, max_message_bytes: int = 4 * 1024 * 1024
) -> list[tuple[str, Any]]:
    host = target.rsplit(":", 1)[0].strip("[]")
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    name = server_name or (DEFAULT_SERVER_NAME if host in ("127.0.0.1", "::1", "0.0.0.0", "") else None)
    if name:
        opts.append(("grpc.ssl_target_name_override", name))
    return opts


def secure_channel(
    target: str, paths: CertPaths, server_name: str | None = None, max_message_bytes: int = 4 * 1024 * 1024
) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        target, channel_credentials(paths), options=channel_options(target, server_name, max_message_bytes)
    )


_identities: dict[bytes, Identity] = {}


def peer_identity(context: grpc.aio.ServicerContext) -> Identity:
    """The verified identity of the caller, from its certificate (parsed once per certificate)."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        raise CertError("no client certificate")
    pem = pems[0]
    key = hashlib.sha256(pem).digest()  # not the PEM itself: ~1.2 KiB per connected agent (issue 17)
    ident = _identities.get(key)
    if ident is None:
        ident = identity_from_pem(pem)
        if len(_identities) > 20_000:
            _identities.clear()
        _identities[key] = ident
    return ident


def parse_address(address: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) with a clear error."""
    from .errors import ConfigError

    addr = address.strip()
    if not addr or ":" not in addr:
        raise ConfigError(f"malformed address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8443")
    host, _, port_s = addr.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"malformed address {address!r}: missing host (expected HOST:PORT)")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"malformed address {address!r}: port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"malformed address {address!r}: port {port} is out of range 0-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
