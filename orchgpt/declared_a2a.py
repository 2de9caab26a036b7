"""Declared agent types that front an external A2A agent (an ``[a2a]`` table, docs/agents.md).

For each such type the daemon runs the proxy agent `orchgpt a2a add NAME URL` (the same
supervisor as the ``a2a_agents`` setting, orchgpt/a2a/supervisor.py: certificate NAME issued by
the CA, restarted when it exits, stopped with the daemon), so tasks of the type go to the
external agent. A reload starts the proxies of new types, and restarts or stops those whose
table changed or whose file is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import logs
from .agent_defs import A2aRemote

if TYPE_CHECKING:
    from .declared_types import DeclaredTypes

log = logs.get("orchgpt.declared_a2a")


class DeclaredProxies:
    def __init__(self, certs: Path, data_dir: Path, address: Callable[[], str], default_ca: str = "") -> None:
        self.certs = certs
        self.data_dir = data_dir
        self.address = address
        self.default_ca = default_ca
        self.running: dict[str, tuple[A2aRemote, Any]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def sync(self, declared: DeclaredTypes, changed: set[str] | None = None) -> None:
        """Run one proxy per declared A2A type, no more (a hook of DeclaredTypes.reload)."""
        from .a2a.supervisor import ProxySupervisor

        want = {n: d.a2a for n, d in declared.defs.items() if d.a2a is not None}
        for name, (remote, sup) in list(self.running.items()):
            if want.get(name) != remote:
                del self.running[name]
                t = asyncio.get_running_loop().create_task(sup.stop())
                self._stopping.add(t)
                t.add_done_callback(self._stopping.discard)
                log.info("declared_a2a_proxy_stopping", agent_type=name)
        for name, remote in want.items():
            if name in self.running:
                continue
            sup = ProxySupervisor(
                {name: remote.url},
                self.certs,
                self.data_dir,
                self.address,
                remote.ca_file or self.default_ca,
                remote.auth_env,
            )
            sup.start()  # ConfigError without the CA key
            self.running[name] = (remote, sup)

    async def stop(self) -> None:
        sups = [sup for _, sup in self.running.values()]
        self.running.clear()
        await asyncio.gather(*(s.stop() for s in sups), *self._stopping, return_exceptions=True)


def start(server: Any) -> DeclaredProxies:
    """The proxies of the server's declared A2A types, kept in step with reloads."""
    s = server.settings
    proxies = DeclaredProxies(s.certs, s.data_dir, lambda: str(server.address), s.a2a_agents_ca)
    proxies.sync(server.declared)

    def resync(declared: DeclaredTypes, changed: set[str]) -> None:
        try:
            proxies.sync(declared, changed)
        except Exception as exc:  # keep the daemon up; the reason is in the log
            log.error("declared_a2a_proxy_failed", error=str(exc))

    server.declared.on_change.append(resync)
    return proxies
