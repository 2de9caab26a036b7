"""An external A2A agent written with a2a-sdk alone (no orchgpt code): `upper` upper-cases its
input, streaming a status update and the output in two appended artifact chunks. Input "ask"
first asks its user (INPUT_REQUIRED) and then upper-cases the answer; input "slow" waits 30 s.

Run: python -m tests.support.a2a_upper PORT_FILE  (serves plain HTTP on 127.0.0.1, port 0)
With UPPER_REQUIRE_TOKEN=TOKEN in its environment, every request (the card too) needs
``Authorization: Bearer TOKEN``; others get 401. With UPPER_API_KEY=KEY, its card (public)
declares an API key in the header X-API-Key, which every other request needs. With
UPPER_TLS_DIR=DIR (a CA directory as `orchgpt certs init` makes), it serves HTTPS at
https://localhost:PORT with DIR's server certificate and asks for a client certificate of DIR's CA.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as a2a
from starlette.applications import Starlette


class Upper(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        up = TaskUpdater(event_queue, task.id, task.context_id)
        if text == "ask":
            await up.requires_input(up.new_agent_message([a2a.Part(text="what shall I shout?")]))
            return
        if text == "slow":
            await up.start_work(up.new_agent_message([a2a.Part(text="sleeping")]))
            await asyncio.sleep(30)
        await up.start_work(up.new_agent_message([a2a.Part(text="upper-casing")]))
        half = len(text) // 2
        await up.add_artifact([a2a.Part(text=text[:half].upper())], artifact_id="out", append=False)
        await up.add_artifact([a2a.Part(text=text[half:].upper())], artifact_id="out", append=True, last_chunk=True)
        await up.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def _guard(app: Any, header: bytes, value: str, public: str = "") -> Any:
    """ASGI: refuse (401) an HTTP request without the header's value (but the ``public`` path)."""
    want = value.encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != public and dict(scope["headers"]).get(header) != want:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"bearer token required"})
            return
        await app(scope, receive, send)

    return guarded


def main(port_file: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls = os.environ.get("UPPER_TLS_DIR", "")  # HTTPS, asking for a client certificate of its CA
    base = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
    card = a2a.AgentCard(
        name="upper",
        description="upper-cases its input",
        version="1.0",
        supported_interfaces=[a2a.AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=a2a.AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[a2a.AgentSkill(id="shout", name="shout", description="upper-case text", tags=["text"])],
    )
    if os.environ.get("UPPER_API_KEY"):
        card.security_schemes["key"].api_key_security_scheme.CopyFrom(
            a2a.APIKeySecurityScheme(location="header", name="X-API-Key")
        )
        card.security_requirements.add().schemes["key"].SetInParent()
    handler = DefaultRequestHandler(Upper(), InMemoryTaskStore(), card)
    app: Any = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    token = os.environ.get("UPPER_REQUIRE_TOKEN", "")
    if token:
        app = _guard(app, b"authorization", f"Bearer {token}")
    key = os.environ.get("UPPER_API_KEY", "")
    if key:
        app = _guard(app, b"x-api-key", key, public="/.well-known/agent-card.json")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    extra: dict[str, Any] = {}
    if tls:
        import ssl

        extra = {
            "ssl_certfile": f"{tls}/server.pem",
            "ssl_keyfile": f"{tls}/server-key.pem",
            "ssl_ca_certs": f"{tls}/ca.pem",
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    uvicorn.Server(uvicorn.Config(app, log_level="warning", **extra)).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1])
