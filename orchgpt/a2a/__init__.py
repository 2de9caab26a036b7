"""A2A (Agent2Agent v1.0) for the mesh: every agent type is an A2A agent (docs/a2a.md).

Needs the optional extra: pip install 'orchgpt[a2a]' (a2a-sdk).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


async def start_listener(server: Any) -> Any:
    """Start A2A for an OrchgptServer whose gRPC server is made but not started: the gRPC
    A2AService on its port (``settings.a2a_grpc``) and the JSON-RPC + SSE listener
    (``settings.a2a_listen``), with push notifications (``settings.a2a_push``). Returns what
    to stop (``await it.stop()``), or None when A2A is off."""
    s = server.settings
    proxies = None
    if s.a2a_agents:  # external A2A agents, each behind a proxy agent the daemon runs
        from .supervisor import ProxySupervisor

        proxies = ProxySupervisor(
            s.a2a_agents,
            s.certs,
            s.data_dir,
            lambda: server.address,
            s.a2a_agents_ca,
            auth=s.a2a_agents_auth,
            client_certs=s.a2a_agents_client_cert,
            client_keys=s.a2a_agents_client_key,
        )
        proxies.start()
    if not s.a2a_listen and not s.a2a_grpc:
        return _Running(None, None, proxies) if proxies is not None else None
    try:
        from .. import __version__
        from ..certs import paths_for
        from . import mapping
        from .handler import MeshRequestHandler
    except ImportError as exc:
        raise ConfigError(f"A2A needs a2a-sdk: pip install 'orchgpt[a2a]' ({exc})") from None

    handler = MeshRequestHandler(
        server.mesh,
        revocations=server.revocations,
        max_task_input_bytes=s.max_task_input_bytes,
        max_pending_events=s.max_pending_events,
        accepting=lambda: server.servicer.accepting,
    )
    listener = None
    if s.a2a_listen:
        from .http import A2AListener

        listener = A2AListener(
            handler,
            s.a2a_listen,
            paths_for(s.certs, "server"),
            public_host=s.a2a_public_host,
            max_body_bytes=s.max_message_bytes,
        )

    def card(agent_type: str) -> Any:
        grpc_address = ""
        if s.a2a_grpc:
            host = s.a2a_public_host or "localhost"  # the name on the server certificate
            grpc_address = f"{host}:{server.port}"
        base = listener.base_url if listener is not None else ""
        agents = server.mesh.list_agents(agent_type)
        card = mapping.agent_card(agent_type, base, agents, __version__, grpc_address)
        card.capabilities.push_notifications = handler.push is not None
        declared = getattr(server, "declared", None)  # a type declared in a file: its description
        d = declared.defs.get(agent_type) if declared is not None else None
        if d is not None and d.description:
            card.description = d.description
        return card

    handler.card = card
    if s.a2a_push != "off":
        from .push import PushNotifier

        handler.push = PushNotifier(server.mesh, s.a2a_push, server.mesh.get_task)
        handler.push.resume()  # tasks recovered with push configs in the store
    handler.workspaces = s.workspaces
    if listener is not None:
        from urllib.parse import quote

        def artifact_url(task: Any, path: str) -> str:
            return f"{listener.base_url}/{task.agent_type}/artifacts/{task.task_id}/{quote(path)}"

        handler.artifact_url = artifact_url
    if s.a2a_grpc:
        from .grpc_service import add_a2a_service

        add_a2a_service(handler, server.server)
    if listener is not None:
        listener.card = card
        await listener.start()
    return _Running(listener, handler.push, proxies)


class _Running:
    def __init__(self, listener: Any, push: Any, proxies: Any = None) -> None:
        self.listener = listener
        self.push = push
        self.proxies = proxies

    async def stop(self) -> None:
        if self.proxies is not None:
            await self.proxies.stop()
        if self.listener is not None:
            await self.listener.stop()
        if self.push is not None:
            await self.push.close()
