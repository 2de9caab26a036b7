"""Artifact uploads on an agent's Connect stream: FILE_TRANSFER chunks into the daemon's
content-addressed store, and FILE_RESUME (how much of an upload cut by a disconnect the daemon
kept). Only the agent running a task may upload its files (rule upload-own-task; docs/protocol.md
§4.5). A mixin of the agents' servicer (servicer_agents.py)."""

from __future__ import annotations

from . import codec, logs, stream_rules
from .artifact_store import UploadError
from .artifacts import ArtifactError
from .batching import Outbox
from .iac.v1 import iac_pb2 as pb
from .models import Task
from .servicer_base import ORCH, ServicerBase

log = logs.get("orchgpt.servicer")


class AgentUploads(ServicerBase):
    def _on_upload(self, agent_id: str, env: pb.Envelope, outbox: Outbox) -> None:
        """FILE_TRANSFER to the daemon: a chunk of an artifact of a task the sender runs or ran
        (orchgpt.artifact_store; docs/protocol.md §4.5)."""
        store = self.artifact_store
        if env.WhichOneof("body") != "file_chunk":
            raise stream_rules.ProtocolError("INVALID_ARGUMENT", "FILE_TRANSFER needs the body file_chunk")
        if store is None:
            raise stream_rules.ProtocolError("UNAVAILABLE", "this orchestrator keeps no artifact store")
        t = self._uploader_task(agent_id, env)
        c = env.file_chunk
        try:
            store.chunk(agent_id, t.task_id, c.path, c.offset, c.data, c.eof, c.size, c.sha256, id(outbox))
        except (UploadError, ArtifactError) as exc:
            raise stream_rules.ProtocolError(exc.code, str(exc)) from None

    def _uploader_task(self, agent_id: str, env: pb.Envelope) -> Task:
        t = self.mesh.get_task(env.task_id) if env.task_id else None
        if t is None or t.agent_id != agent_id:
            log.warning("upload_refused", agent_id=agent_id, task_id=env.task_id)
            raise stream_rules.ProtocolError(
                "PERMISSION_DENIED",
                f"{pb.MessageType.Name(env.type)} for task {env.task_id!r}: only "
                "the agent running that task may upload its files (envelope task_id); dropped "
                "(rule upload-own-task)",
            )
        return t

    def _on_resume(self, agent_id: str, env: pb.Envelope, outbox: Outbox) -> None:
        """FILE_RESUME: how much of an upload cut by a disconnect the daemon kept (FILE_RESUME_AT)."""
        store = self.artifact_store
        if env.WhichOneof("body") != "file_chunk" or store is None:
            raise stream_rules.ProtocolError(
                "INVALID_ARGUMENT",
                "FILE_RESUME needs the body file_chunk and an orchestrator that keeps an artifact store",
            )
        t, c = self._uploader_task(agent_id, env), env.file_chunk
        try:
            at = store.resume_offset(agent_id, t.task_id, c.path, c.size, c.sha256, id(outbox))
        except (UploadError, ArtifactError) as exc:
            raise stream_rules.ProtocolError(exc.code, str(exc)) from None
        outbox.put(
            codec.new_envelope(
                pb.FILE_RESUME_AT,
                ORCH,
                correlation_id=env.id,
                to_agent=agent_id,
                task_id=t.task_id,
                file_chunk=pb.FileChunk(path=c.path, offset=max(at, 0), size=c.size, eof=at < 0),
            )
        )
