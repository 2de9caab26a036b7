"""A2A (Agent2Agent v1.0) for the mesh: every agent type is an A2A agent (docs/a2a.md).

Needs the optional extra: pip install 'orchgpt[a2a]' (a2a-sdk).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


async def start_listener(server: Any) -> Any:
    """Start the A2A listener of a running OrchgptServer (``settings.a2a_listen``);
    None when it is off."""
    s = server.settings
    if not s.a2a_listen:
        return None
    try:
        from .http import A2AListener
    except ImportError as exc:
        raise ConfigError(
            f"--a2a-listen needs a2a-sdk: pip install 'orchgpt[a2a]' ({exc})"
        ) from None
    from ..certs import paths_for

    listener = A2AListener(
        server.mesh,
        s.a2a_listen,
        paths_for(s.certs, "server"),
        revocations=server.revocations,
        max_task_input_bytes=s.max_task_input_bytes,
        max_pending_events=s.max_pending_events,
        accepting=lambda: server.servicer.accepting,
        public_host=s.a2a_public_host,
    )
    await listener.start()
    return listener
