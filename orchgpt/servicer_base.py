"""What every part of the gRPC servicer shares: the daemon's sender name, status codes by
name, and the helpers each RPC uses (identity, authorization, task access, refusals, the
stream guard of limits and revocation). The parts: servicer_agents.py (Connect: agent
streams), servicer_clients.py (the client RPCs); servicer.py puts them together.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from . import authz, codec, logs, stream_rules
from .artifact_store import ArtifactStore
from .batching import Outbox
from .certs import Identity
from .declared_types import DeclaredTypes
from .errors import CertError, OrchgptError
from .iac.v1 import iac_pb2 as pb
from .limits import (
    EventBudget,
    PeerLimits,
    StreamCutter,
)
from .mesh import Mesh
from .models import Task
from .revocation import Revocations
from .status import to_grpc
from .tls import peer_identity
from .workflows import WorkflowBook

log = logs.get("orchgpt.servicer")

ORCH = authz.DAEMON
FILE_CHUNK = 256 * 1024
_TYPE_NAMES = {v: k for k, v in pb.MessageType.items()}


class ServicerBase:
    """State and helpers of the Mesh servicer (set by servicer.MeshServicer.__init__)."""

    mesh: Mesh
    max_message_bytes: int
    max_pending_events: int
    workspaces: Path | None
    revocation: Revocations
    limits: PeerLimits
    event_budget: EventBudget
    heartbeat_ms: int
    first_message_timeout: float
    accepting: bool
    runs: stream_rules.RunIds
    commands: authz.OpenCommands
    artifact_store: ArtifactStore | None = None  # uploaded artifacts (the server sets it)
    upload_waits: dict[str, asyncio.Future[None]]  # uploads being written (servicer_uploads)
    workflows: WorkflowBook | None = None  # the workflow definitions (the server sets them)
    declared: DeclaredTypes | None = None  # agent types declared in files (the server sets it)

    # ------------------------------------------------------------------ helpers
    def _definition(self, agent_type: str) -> pb.AgentDefinition | None:
        """REGISTERED's definition of a declared type (None for the others)."""
        text = self.declared.definition_json(agent_type) if self.declared is not None else ""
        return pb.AgentDefinition(name=agent_type, definition_json=text) if text else None

    def _declared_caps(self, agent_type: str) -> list[str]:
        return self.declared.capabilities(agent_type) if self.declared is not None else []

    def _declared_listing(self, agent_type: str = "") -> list[pb.AgentDefinition]:
        found = self.declared.listing() if self.declared is not None else []
        return [
            pb.AgentDefinition(name=d.name, description=d.description, capabilities=d.capabilities)
            for d in found
            if not agent_type or d.name == agent_type
        ]

    async def _identity(
        self, context: grpc.aio.ServicerContext, role: str | None = None, stream: bool = False
    ) -> Identity:
        abort = self._refusal(context, unread=True) if stream else context.abort
        try:
            ident = peer_identity(context)
        except CertError as exc:
            await abort(to_grpc(exc.code), f"certificate not accepted: {exc}")
            raise AssertionError("unreachable") from None
        refused = self.revocation.check_on_call(ident)
        if refused:
            await abort(grpc.StatusCode.UNAUTHENTICATED, refused)
        if role is not None and ident.role != role:
            what = "connect as an agent" if role == "agent" else "submit or change work (client role needed)"
            await abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {ident.role} certificate ({ident.name}) cannot {what}; "
                f"issue one with `orchgpt certs issue NAME --role {role}`",
            )
        return ident

    async def _authorize(self, context: grpc.aio.ServicerContext, rpc: str, stream: bool = False) -> Identity:
        """The caller's identity, once orchgpt.authz allows its role to call this RPC
        (``stream``: Connect, whose refusals are an ERROR envelope and then the status)."""
        ident = await self._identity(context, stream=stream)
        d = authz.connect(ident) if rpc == "Connect" else authz.rpc(ident, rpc)
        if not d:
            log.warning("rpc_refused", rpc=rpc, peer=ident.name, role=ident.role, rule=d.rule)
            abort = self._refusal(context, unread=True) if stream else context.abort
            await abort(to_grpc(d.code), d.message)
        return ident

    async def _task_for(self, context: grpc.aio.ServicerContext, ident: Identity, rpc: str, task_id: str) -> Task:
        """The task, when it exists and the caller may see it; NOT_FOUND otherwise (both alike)."""
        t = self.mesh.get_task(task_id) if task_id else None
        if t is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task {task_id!r}")
        assert t is not None
        d = authz.task_access(ident, rpc, t, self.mesh.get_task)
        if not d:
            log.info("task_access_refused", rpc=rpc, peer=ident.name, task_id=task_id, rule=d.rule)
            await context.abort(to_grpc(d.code), d.message)
        return t

    async def _abort_error(self, context: grpc.aio.ServicerContext, exc: OrchgptError, detail: str = "") -> None:
        """Ends the call with the status of ``exc``'s code (orchgpt.status: the one mapping)."""
        await context.abort(to_grpc(exc.code), detail or str(exc))

    @staticmethod
    def _refusal(context: grpc.aio.ServicerContext, correlation_id: str = "", unread: bool = False):  # type: ignore[no-untyped-def]
        """Connect's abort: an ERROR envelope with the code first, then the status (docs/protocol.md)."""

        async def refuse(code: grpc.StatusCode, message: str) -> None:
            log.warning("agent_stream_refused", peer=context.peer(), code=code.name, reason=message)
            try:  # (unread) take the peer's first batch (REGISTER) first: a client whose write is still in
                # flight when the status arrives reports INTERNAL ("execute_batch") instead of it
                if unread:
                    await asyncio.wait_for(context.read(), 1.0)
            except Exception as exc:  # nothing sent, or the stream is gone: refuse all the same
                log.debug("refused_stream_first_read", error=str(exc))
            err = codec.new_envelope(
                pb.ERROR, ORCH, correlation_id=correlation_id, error=pb.Error(code=code.name, message=message)
            )
            try:
                await context.write(pb.Batch(envelopes=[err]))
            except Exception as exc:  # the peer is gone: the status is all there is
                log.debug("error_envelope_not_sent", error=str(exc))
            await context.abort(code, message)

        return refuse

    def _type_of(self, task_id: str) -> str:
        return self.mesh.agent_type_of(task_id)

    # ------------------------------------------------------------------ limits and revocation
    # (orchgpt/limits.py, orchgpt/revocation.py, docs/security-limits.md)
    def _guard_stream(self, context: grpc.aio.ServicerContext, outbox: Outbox, agent_id: str = "") -> StreamCutter:
        """Bound ``outbox`` by max_stream_queue_bytes, and cut its stream when the peer stops
        reading or its certificate is revoked (tracked while the stream lives)."""
        ident = peer_identity(context)
        outbox.bound(self.limits.max_stream_queue_bytes)
        cutter = StreamCutter(outbox)
        g = _StreamGuard(ident, outbox, cutter, agent_id)
        outbox.on_overflow = g.overflow
        if agent_id:
            outbox.farewell = g.farewell
        cutter.on_revoked = g.revoked
        self.revocation.track(ident.serial, cutter)
        return cutter

    async def _end_stream(self, context: grpc.aio.ServicerContext, outbox: Outbox) -> None:
        """A stream the daemon cut (overflow, revocation) ends with that status."""
        if outbox.error is not None:
            await context.abort(to_grpc(outbox.error[0]), outbox.error[1])


class _StreamGuard:
    """What cuts one stream (its outbox overflowing, its certificate revoked) and the ERROR its
    agent gets last; bound methods rather than closures: one per connected agent (issue 17)."""

    __slots__ = ("agent_id", "cutter", "ident", "outbox")

    def __init__(self, ident: Identity, outbox: Outbox, cutter: StreamCutter, agent_id: str) -> None:
        self.ident, self.outbox, self.cutter, self.agent_id = ident, outbox, cutter, agent_id

    def overflow(self) -> None:
        log.warning("stream_cut", peer=self.ident.name, role=self.ident.role, reason=self.outbox.dropped_reason)
        self.cutter()

    def farewell(self, code: str, msg: str) -> pb.Envelope:
        return codec.new_envelope(pb.ERROR, ORCH, to_agent=self.agent_id, error=pb.Error(code=code, message=msg))

    def revoked(self) -> None:
        ident = self.ident
        msg = f"certificate revoked: {ident.name!r} (serial {ident.serial:x}) is on the revocation list"
        far = self.outbox.farewell
        self.outbox.abort("UNAUTHENTICATED", msg, last=far("UNAUTHENTICATED", msg) if far else None)
        self.cutter()
