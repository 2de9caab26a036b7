"""The A2A JSON-RPC + SSE listener of the daemon (`orchgpt serve --a2a-listen HOST:PORT`).

HTTPS with mutual TLS: the mesh CA, a client certificate required and verified in the
handshake (a peer without one gets no HTTP at all). The caller's identity is read from the
certificate of the TLS connection itself (never from a header: uvicorn's proxy headers are off)
with orchgpt.certs.identity_from_pem, exactly as the gRPC port does.

Routes (TYPE is an agent type, the A2A tenant):
  GET  /TYPE/.well-known/agent-card.json   the type's AgentCard, built from the registry per request
  POST /TYPE                               JSON-RPC (a2a-sdk's dispatcher; SSE for the streams)
  POST /                                   JSON-RPC, the tenant from each request's `tenant` field
  GET  /.well-known/agent-card.json        404 naming the per-type cards
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder, create_jsonrpc_routes
from a2a.types.a2a_pb2 import AgentCard
from a2a.utils.errors import A2AError, InvalidParamsError, TaskNotFoundError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import __version__, logs
from ..certs import CertPaths, Identity, identity_from_pem
from ..errors import CertError
from ..mesh import AGENT_TYPE_RE
from ..tls import format_address, parse_address
from . import mapping
from .handler import IDENTITY, PATH_TENANT, MeshRequestHandler

log = logs.get("orchgpt.a2a")

PEER_PEM = "orchgpt_peer_pem"  # per-connection ASGI state key: the client certificate (PEM)
CARD_PATH = "/.well-known/agent-card.json"
MAX_CONNECTIONS = 1000  # beyond: 503 (uvicorn's limit_concurrency)


class _MtlsH11(H11Protocol):
    """uvicorn's h11 protocol, with the verified client certificate of the connection in every
    request's ``scope["state"]`` (uvicorn passes no TLS details to the app by itself)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        obj = transport.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        self.app_state = {**self.app_state, PEER_PEM: ssl.DER_cert_to_PEM_cert(der) if der else ""}


class _ContextBuilder(DefaultServerCallContextBuilder):
    """The ServerCallContext of a request: the certificate's identity and the path's tenant."""

    def __init__(self) -> None:
        self._identities: dict[str, Identity] = {}  # parsed once per certificate

    def build(self, request: Request) -> ServerCallContext:
        ctx = super().build(request)
        pem = request.scope.get("state", {}).get(PEER_PEM, "")
        ident = self._identities.get(pem) if pem else None
        if pem and ident is None:
            try:
                ident = identity_from_pem(pem.encode())
            except CertError as exc:
                log.warning("a2a_certificate_refused", error=str(exc))
            else:
                if len(self._identities) > 20_000:
                    self._identities.clear()
                self._identities[pem] = ident
        if ident is not None:
            ctx.state[IDENTITY] = ident
        ctx.state[PATH_TENANT] = request.path_params.get("tenant", "")
        return ctx


class _BodyLimit:
    """Refuse a request body over ``limit`` bytes (a declared length at once, a chunked body as
    it arrives), so that one request cannot hold more memory than the gRPC port allows."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            log.warning("a2a_body_too_large", declared=int(declared), limit=self.limit)
            resp = JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": f"request body over {self.limit} bytes"},
                },
                status_code=413,
            )
            await resp(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body over {self.limit} bytes")
            return msg

        await self.app(scope, limited, send)


class _QuietServer(uvicorn.Server):
    """The daemon owns the signals: uvicorn must not install its own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class A2AListener:
    def __init__(
        self,
        handler: MeshRequestHandler,
        listen: str,
        certs: CertPaths,
        *,
        public_host: str = "",
        card: Callable[[str], AgentCard] | None = None,
        max_body_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.mesh = handler.mesh
        self.listen = listen
        self.certs = certs
        self.handler = handler
        self._builder = _ContextBuilder()
        self.card = card
        self.public_host = public_host
        self.port = 0
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        host, _ = parse_address(self.listen)
        if self.public_host:
            host = self.public_host
        elif host in ("0.0.0.0", "::", "", "127.0.0.1", "::1"):
            host = "localhost"  # the name the server certificate carries
        return f"https://{format_address(host, self.port)}"

    def app(self) -> Starlette:
        builder = self._builder
        rpc_tenant = create_jsonrpc_routes(self.handler, "/{tenant}", context_builder=builder)
        rpc_root = create_jsonrpc_routes(self.handler, "/", context_builder=builder)
        return Starlette(
            routes=[
                Route(CARD_PATH, self._no_root_card, methods=["GET"]),
                Route("/{tenant}" + CARD_PATH, self._card, methods=["GET"]),
                Route("/{tenant}/artifacts/{task_id}/{path:path}", self._file, methods=["GET"]),
                *rpc_root,
                *rpc_tenant,
            ]
        )

    async def _card(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not AGENT_TYPE_RE.match(tenant) or tenant not in self.mesh.known_types():
            return JSONResponse({"error": f"no agent type {tenant!r}"}, status_code=404)
        card = (
            self.card(tenant)
            if self.card is not None
            else mapping.agent_card(tenant, self.base_url, self.mesh.list_agents(tenant), __version__)
        )
        return JSONResponse(agent_card_to_dict(card))

    async def _file(self, request: Request) -> Response:
        """A result file too large to go inline (FetchArtifact's rules and ownership)."""
        ctx = self._builder.build(request)
        try:
            f = self.handler.open_file(ctx, request.path_params["task_id"], request.path_params["path"])
        except A2AError as exc:
            status = {TaskNotFoundError: 404, InvalidParamsError: 400}.get(type(exc), 403)
            return JSONResponse({"error": exc.message}, status_code=status)
        media = mimetypes.guess_type(request.path_params["path"])[0] or "application/octet-stream"
        return StreamingResponse(f.chunks(64 * 1024), media_type=media, headers={"Content-Length": str(f.size)})

    async def _no_root_card(self, request: Request) -> Response:
        types = sorted(self.mesh.known_types())
        return JSONResponse(
            {
                "error": "one agent card per agent type",
                "cards": [f"{self.base_url}/{t}{CARD_PATH}" for t in types],
            },
            status_code=404,
        )

    def _ssl_config(self) -> dict[str, Any]:
        return {
            "ssl_certfile": str(self.certs.cert),
            "ssl_keyfile": str(self.certs.key),
            "ssl_ca_certs": str(self.certs.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }

    async def start(self) -> int:
        self.certs.read()  # CertError naming a missing file
        host, port = parse_address(self.listen)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen for A2A on {self.listen}: {exc}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            _BodyLimit(self.app(), self.max_body_bytes),
            http=_MtlsH11,
            ws="none",
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            limit_concurrency=MAX_CONNECTIONS,
            h11_max_incomplete_event_size=64 * 1024,  # request line and headers
            **self._ssl_config(),
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it stopped
                raise OSError(f"the A2A listener on {self.listen} stopped at start")
            await asyncio.sleep(0.02)
        log.info("a2a_serving", address=format_address(host, self.port), base_url=self.base_url)
        return self.port

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5)
        except Exception as exc:  # keep shutting down (a timeout too)
            log.warning("a2a_stop_error", error=str(exc) or type(exc).__name__)
        self._server = None
