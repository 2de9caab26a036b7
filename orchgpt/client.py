"""MeshClient: the client side of the Mesh service (used by the CLI, scripts and tests).

Every failure is a ClientError whose message says what went wrong in words a
user can act on (unreachable daemon, refused certificate, unknown agent type).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from . import tracing
from .addresses import AddressRing, parse_addresses
from .certs import CertPaths
from .client_graphs import GraphClient
from .client_schedules import ScheduleCalls
from .client_submit import SubmitStream
from .errors import CertError, ClientError, ConfigError
from .iac.v1 import iac_pb2 as pb
from .iac.v1 import iac_pb2_grpc as pb_grpc
from .models import (
    AgentInfo,
    ApprovalResponse,
    Command,
    SessionInfo,
    SessionMessage,
    Task,
    TaskEvent,
)
from .tls import secure_channel
from .wire import codec

DEFAULT_ADDRESS = "127.0.0.1:8443"


def resolve_address(address: str | None = None) -> str:
    """The address (or comma-separated addresses, to fail over between) to use."""
    addr = address or os.environ.get("ORCHGPT_ADDRESS") or os.environ.get("ORCHESTRATOR_ADDRESS") or DEFAULT_ADDRESS
    parse_addresses(addr)  # ConfigError when malformed
    return addr


def resolve_certs(
    certs_dir: str | None = None,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    name: str = "cli",
) -> CertPaths:
    d = Path(certs_dir or os.environ.get("ORCHGPT_CERTS") or "certs")
    return CertPaths(
        Path(ca or os.environ.get("ORCHGPT_CA") or d / "ca.pem"),
        Path(cert or os.environ.get("ORCHGPT_CERT") or d / f"{name}.pem"),
        Path(key or os.environ.get("ORCHGPT_KEY") or d / f"{name}-key.pem"),
    )


def _explain(exc: grpc.aio.AioRpcError, address: str) -> ClientError:
    code = exc.code()
    detail = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        low = detail.lower()
        tls_words = ("handshake", "certificate", "ssl", "tls")
        if any(w in low for w in tls_words) or ("failed to connect" in low and "socket closed" in low):
            msg = (
                f"orchgpt at {address} refused the TLS handshake: the certificate is not signed by the "
                f"mesh CA, or the server's certificate does not match ({detail})"
            )
        elif "connection refused" in low or "failed to connect" in low:
            msg = f"cannot reach orchgpt at {address}: is `orchgpt serve` running? ({detail})"
        elif "socket closed" in low or "connection reset" in low or "stream removed" in low:
            msg = f"lost the connection to orchgpt at {address} ({detail})"
        else:
            msg = f"orchgpt at {address} is unavailable: {detail}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        msg = f"orchgpt at {address} did not answer in time"
    else:
        msg = detail or code.name
    return ClientError(msg, code.name)


class MeshClient(GraphClient, ScheduleCalls):  # graphs: client_graphs.py; schedules: client_schedules.py
    """``address`` may list several daemons (``A,B,C``): a call that finds the one in use
    UNAVAILABLE tries the next (each once per call); ``address`` is the one in use."""

    def __init__(
        self,
        address: str,
        certs: CertPaths,
        server_name: str | None = None,
        timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        try:
            self._ring = AddressRing(address)
        except ConfigError as exc:
            raise ClientError(str(exc), "INVALID_ARGUMENT") from None
        self.address = self._ring.current
        self.certs = certs
        self.server_name = server_name
        self.timeout = timeout
        self.name = name
        self._old: list[grpc.aio.Channel] = []
        self._open()

    def _open(self) -> None:
        try:
            self._channel = secure_channel(self.address, self.certs, self.server_name)
        except CertError as exc:
            raise ClientError(str(exc), "UNAUTHENTICATED") from None
        self._stub = pb_grpc.MeshStub(self._channel)
        self._schedules_stub = None  # (client_schedules.py: made again on this channel)

    def _failover(self, exc: grpc.aio.AioRpcError, tried: int) -> bool:
        """After ``exc`` from the daemon in use: switch to the next address and say True,
        unless the error is not UNAVAILABLE or ``tried`` addresses were tried already."""
        if exc.code() != grpc.StatusCode.UNAVAILABLE or tried >= len(self._ring):
            return False
        self._old.append(self._channel)  # closed by close(): a call may still hold it
        self.address = self._ring.advance()
        self._open()
        return True

    @classmethod
    def from_env(
        cls,
        address: str | None = None,
        certs_dir: str | None = None,
        *,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = 10.0,
    ) -> MeshClient:
        try:
            addr = resolve_address(address)
        except ConfigError as exc:
            raise ClientError(str(exc), "INVALID_ARGUMENT") from None
        return cls(addr, resolve_certs(certs_dir, ca=ca, cert=cert, key=key), timeout=timeout)

    async def close(self) -> None:
        for ch in [*self._old, self._channel]:
            await ch.close(grace=None)
        self._old.clear()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        """``method``: a function giving the stub's method on the channel in use (that channel
        changes on failover: the call is tried on the next daemon), or the stub's method itself
        (not tried again; the next call goes to the next daemon)."""
        tried = 1
        while True:
            bound = isinstance(method, grpc.aio.UnaryUnaryMultiCallable)
            try:
                call = method if bound else method()
                return await call(request, timeout=timeout or self.timeout, wait_for_ready=False)
            except grpc.aio.AioRpcError as exc:
                if not self._failover(exc, tried) or bound:
                    raise _explain(exc, self.address) from None
                tried += 1

    async def check(self) -> None:
        """Fail with a clear ClientError unless the daemon answers its health check."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        resp = await self._unary(
            lambda: health_pb2_grpc.HealthStub(self._channel).Check, health_pb2.HealthCheckRequest(service="")
        )
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise ClientError(f"orchgpt at {self.address} is not serving (shutting down?)", "UNAVAILABLE")

    async def _stream(self, start: Callable[[], Any]) -> AsyncIterator[TaskEvent]:
        """``start()`` opens the call on the channel in use; a call refused UNAVAILABLE before
        its first answer is opened again on the next daemon."""
        tried = 1
        while True:
            call = start()
            answered = False
            try:
                async for batch in call:
                    answered = True
                    for env in batch.envelopes:
                        if env.HasField("event"):
                            yield codec.event_from_pb(env.event, env.timestamp_ms)
                return
            except grpc.aio.AioRpcError as exc:
                if answered or not self._failover(exc, tried):
                    raise _explain(exc, self.address) from None
                tried += 1
            finally:
                call.cancel()

    def submit(self, command: Command) -> AsyncIterator[TaskEvent]:
        """Submit a command; yields its events (and its sub-tasks') until the RESULT."""
        req = pb.SubmitRequest(command=codec.command_to_pb(command), sender=self.name or "")
        return self._stream(lambda: self._stub.Submit(req, metadata=tracing.grpc_metadata()))

    def submit_stream(
        self, results_only: bool = False, on_event: Callable[[TaskEvent], None] | None = None
    ) -> SubmitStream:
        """Many submissions on one call (``async with``; orchgpt/client_submit.py): ``run(command)``
        gives a task's RESULT event; ``results_only``: the daemon sends nothing else, otherwise every
        other event goes to ``on_event``."""
        return SubmitStream(
            self._stub, lambda exc: _explain(exc, self.address), self.name or "", results_only, on_event
        )

    def watch(self, task_id: str = "", after_seq: int = 0) -> AsyncIterator[TaskEvent]:
        return self._stream(lambda: self._stub.Watch(pb.WatchRequest(task_id=task_id, after_seq=after_seq)))

    async def list_agents(self, agent_type: str = "") -> list[AgentInfo]:
        r = await self._unary(lambda: self._stub.ListAgents, pb.ListAgentsRequest(agent_type=agent_type))
        return [codec.agent_from_pb(a) for a in r.agents]

    async def declared_types(self, agent_type: str = "") -> dict[str, str]:
        """The agent types declared in the daemon's agents directory: name -> description."""
        return (await self.agents_and_types(agent_type))[1]

    async def agents_and_types(self, agent_type: str = "") -> tuple[list[AgentInfo], dict[str, str]]:
        """One ListAgents: the connected agents, and the declared types (name -> description)."""
        r = await self._unary(lambda: self._stub.ListAgents, pb.ListAgentsRequest(agent_type=agent_type))
        return [codec.agent_from_pb(a) for a in r.agents], {d.name: d.description for d in r.declared}

    async def get_task(self, task_id: str, with_events: bool = True) -> tuple[Task, list[TaskEvent], list[Task]]:
        r = await self._unary(lambda: self._stub.GetTask, pb.GetTaskRequest(task_id=task_id, with_events=with_events))
        return (
            codec.task_from_pb(r.task),
            [codec.event_from_pb(e) for e in r.events],
            [codec.task_from_pb(c) for c in r.children],
        )

    async def list_tasks(self, limit: int = 50, session_id: str = "", include_children: bool = False) -> list[Task]:
        """The newest ``limit`` tasks, read over as many pages as the daemon makes of them
        (long texts come truncated in list views: get_task has them whole)."""
        out: list[Task] = []
        token = ""
        while True:
            tasks, token = await self.list_tasks_page(limit - len(out), session_id, include_children, token)
            out.extend(tasks)
            if not token or len(out) >= limit or not tasks:
                return out

    async def list_tasks_page(
        self, limit: int = 50, session_id: str = "", include_children: bool = False, page_token: str = ""
    ) -> tuple[list[Task], str]:
        """One page of tasks and the next page's token ('' on the last page)."""
        r = await self._unary(
            lambda: self._stub.ListTasks,
            pb.ListTasksRequest(
                limit=limit, session_id=session_id, include_children=include_children, page_token=page_token
            ),
        )
        return [codec.task_from_pb(t) for t in r.tasks], r.next_page_token

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        r = await self._unary(lambda: self._stub.CancelTask, pb.CancelTaskRequest(task_id=task_id, reason=reason))
        return codec.task_from_pb(r)

    async def approve(self, task_id: str, response: ApprovalResponse) -> None:
        await self._unary(
            lambda: self._stub.Approve,
            pb.ApproveRequest(task_id=task_id, response=codec.approval_response_to_pb(response)),
        )

    async def fetch_artifact(self, task_id: str, path: str, dest: Path) -> Path:
        """Download a file of a task's workspace over FILE_TRANSFER chunks; the sha256 is checked."""
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / Path(path).name
        h = hashlib.sha256()
        tmp = dest.with_name(f".{dest.name}.part")
        call = self._stub.FetchArtifact(pb.FetchArtifactRequest(task_id=task_id, path=path), timeout=300)
        try:
            with tmp.open("wb") as f:
                async for chunk in call:
                    f.write(chunk.data)
                    h.update(chunk.data)
                    if chunk.eof:
                        if chunk.sha256 and chunk.sha256 != h.hexdigest():
                            raise ClientError(f"{path}: checksum mismatch after transfer")
                        break
        except grpc.aio.AioRpcError as exc:
            tmp.unlink(missing_ok=True)
            raise _explain(exc, self.address) from None
        os.replace(tmp, dest)
        return dest

    async def fetch_all(self, task_id: str, dest_dir: Path) -> list[Path]:
        """Download every file the task's result lists into ``dest_dir``, keeping their
        task-relative paths (each checked: no absolute path, no ``..``); sha256-checked."""
        from .artifacts import ArtifactError, check_path

        task, _, _ = await self.get_task(task_id, with_events=False)
        artifacts = task.result.artifacts if task.result is not None else []
        if not artifacts:
            state = task.state.value
            raise ClientError(f"task {task_id} lists no files (state {state})", "NOT_FOUND")
        saved: list[Path] = []
        for a in artifacts:
            try:
                parts = check_path(a.path)
            except ArtifactError as exc:
                raise ClientError(f"task {task_id} lists a bad path: {exc}", "INVALID_ARGUMENT") from None
            target = Path(dest_dir).joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            saved.append(await self.fetch_artifact(task_id, a.path, target))
        return saved

    async def list_sessions(self, limit: int = 50, published_only: bool = False) -> list[SessionInfo]:
        r = await self._unary(
            lambda: self._stub.ListSessions, pb.ListSessionsRequest(limit=limit, published_only=published_only)
        )
        return [codec.session_from_pb(s) for s in r.sessions]

    async def publish_session(self, session_id: str, tags: list[str]) -> SessionInfo:
        r = await self._unary(
            lambda: self._stub.PublishSession, pb.PublishSessionRequest(session_id=session_id, tags=tags)
        )
        return codec.session_from_pb(r.session)

    # ---- workflows and session operations (orchgpt/servicer_workflows.py)
    async def list_workflows(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The daemon's workflows (each as its definition, with ``path``) and the files that failed."""
        r = await self._unary(lambda: self._stub.ListWorkflows, pb.ListWorkflowsRequest())
        return [_workflow(w) for w in r.workflows], list(r.errors)

    async def get_workflow(self, name: str) -> dict[str, Any]:
        return _workflow(await self._unary(lambda: self._stub.GetWorkflow, pb.GetWorkflowRequest(name=name)))

    async def list_messages(self, session_id: str, limit: int = 1000) -> list[SessionMessage]:
        r = await self._unary(
            lambda: self._stub.ListMessages, pb.ListMessagesRequest(session_id=session_id, limit=limit)
        )
        return [
            SessionMessage(m.message_id, m.session_id, m.task_id, m.speaker, m.role, m.content, m.ts_ms)
            for m in r.messages
        ]

    async def delete_message(self, message_id: str) -> int:
        r = await self._unary(lambda: self._stub.DeleteMessage, pb.DeleteMessageRequest(message_id=message_id))
        return int(r.deleted)

    async def clear_session(self, session_id: str) -> int:
        return int((await self._unary(lambda: self._stub.ClearSession, pb.SessionRef(session_id=session_id))).deleted)

    async def delete_session(self, session_id: str) -> int:
        return int((await self._unary(lambda: self._stub.DeleteSession, pb.SessionRef(session_id=session_id))).deleted)


def _workflow(w: Any) -> dict[str, Any]:
    import json

    d: dict[str, Any] = json.loads(w.definition_json) if w.definition_json else {"name": w.name, "type": w.type}
    d["path"] = w.path
    return d
