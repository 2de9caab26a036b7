"""The gRPC transport of the mesh: the Mesh service, agent links and client subscriptions.

Everything here speaks protobuf and converts at the edge (codec.py); the
decisions are made by mesh.Mesh. The service is put together from its parts:
servicer_agents.py (Connect: agent streams), servicer_link.py (GrpcAgentLink), servicer_clients.py
(client RPCs, EventSubscription), servicer_base.py (what they share).
"""

from __future__ import annotations

from pathlib import Path

from . import authz, stream_rules
from .iac.v1 import iac_pb2_grpc as pb_grpc
from .limits import EventBudget, PeerLimits
from .mesh import Mesh
from .revocation import Revocations
from .servicer_agents import AgentStreams
from .servicer_base import FILE_CHUNK, ORCH
from .servicer_clients import ClientRpcs, EventSubscription, _event_envelope
from .servicer_graphs import GraphRpcs
from .servicer_link import GrpcAgentLink
from .servicer_workflows import WorkflowRpcs

__all__ = ["FILE_CHUNK", "ORCH", "EventSubscription", "GrpcAgentLink", "MeshServicer", "_event_envelope"]


# Connect reads with context.read() (no request iterator parameter in use): the generated base's
# signature differs on purpose, as AgentStreams.Connect's own override note says.
class MeshServicer(AgentStreams, ClientRpcs, WorkflowRpcs, GraphRpcs, pb_grpc.MeshServicer):  # type: ignore[misc]
    def __init__(
        self, mesh: Mesh, max_message_bytes: int, max_pending_events: int, workspaces: Path | None = None
    ) -> None:
        self.mesh = mesh
        self.max_message_bytes = max_message_bytes
        self.max_pending_events = max_pending_events
        self.workspaces = workspaces
        self.revocation = Revocations()  # the server sets the daemon's (crl.pem in the certs dir)
        self.limits = PeerLimits()  # the server sets them from its settings (docs/security-limits.md)
        self.event_budget = EventBudget(self.limits.max_events_per_task)
        self.heartbeat_ms = int(mesh.heartbeat_interval * 1000)
        self.first_message_timeout = 60.0
        self.accepting = True
        self.runs = stream_rules.RunIds()  # RUN envelope ids, to match a REPLY by correlation_id
        self.commands = authz.OpenCommands()  # agent-to-agent COMMANDs awaiting their REPLY
        self.upload_waits = {}  # agent -> the write of its last upload (servicer_uploads.py)
