"""Artifact uploads on an agent's Connect stream: FILE_TRANSFER chunks into the daemon's
content-addressed store, and FILE_RESUME (how much of an upload cut by a disconnect the daemon
kept). Only the agent running a task may upload its files (rule upload-own-task; docs/protocol.md
§4.5). A mixin of the agents' servicer (servicer_agents.py)."""

from __future__ import annotations

import asyncio
from typing import Any

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
            done = store.chunk(agent_id, t.task_id, c.path, c.offset, c.data, c.eof, c.size, c.sha256, id(outbox))
        except (UploadError, ArtifactError) as exc:
            raise stream_rules.ProtocolError(exc.code, str(exc)) from None
        writing = store.pending_commit(agent_id) if done else None
        if writing is not None:  # in the database (artifact_db): written in the background
            self._await_commit(agent_id, writing, env.id, outbox)

    def _await_commit(self, agent_id: str, writing: asyncio.Future[Any], env_id: str, outbox: Outbox) -> None:
        """The agent's next messages wait for the write of its upload (``upload_settled``), so
        that its REPLY is handled once its files are readable; a refused write is an ERROR."""

        async def report() -> None:
            try:
                await writing
            except (UploadError, ArtifactError) as exc:
                log.warning("upload_refused", agent_id=agent_id, code=str(exc.code), error=str(exc))
                error = pb.Error(code=str(exc.code), message=str(exc))
                outbox.put(codec.new_envelope(pb.ERROR, ORCH, correlation_id=env_id, to_agent=agent_id, error=error))

        waits = self.upload_waits
        done = waits[agent_id] = asyncio.ensure_future(report())
        done.add_done_callback(lambda _: waits.pop(agent_id) if waits.get(agent_id) is done else None)

    async def upload_settled(self, agent_id: str) -> None:
        """Wait for the write of the agent's last upload (a cancelled reader leaves it running)."""
        done = self.upload_waits.get(agent_id)
        if done is not None:
            await asyncio.shield(done)

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
