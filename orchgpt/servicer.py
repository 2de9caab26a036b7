"""The gRPC transport of the mesh: the Mesh service, agent links and client subscriptions.

Everything here speaks protobuf and converts at the edge (codec.py); the
decisions are made by mesh.Mesh.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from . import codec, logs
from .batching import Outbox
from .certs import Identity
from .errors import CertError, RoutingError, StoreError
from .iac.v1 import iac_pb2 as pb
from .iac.v1 import iac_pb2_grpc as pb_grpc
from .mesh import LOCAL_PREFIX, Mesh, Registration
from .models import ApprovalResponse, Task, TaskEvent, TaskResult
from .tls import peer_identity

log = logs.get("orchgpt.servicer")

ORCH = "orchgpt"
FILE_CHUNK = 256 * 1024


def _status_for(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


class GrpcAgentLink:
    """AgentLink over one Connect stream."""

    def __init__(self, agent_id: str, outbox: Outbox) -> None:
        self.agent_id = agent_id
        self.outbox = outbox

    def _send(self, env: pb.Envelope) -> None:
        env.recipient.agent_id = self.agent_id
        self.outbox.put(env)

    def send_task(self, task: Task) -> None:
        self._send(codec.new_envelope(pb.RUN, ORCH, task_id=task.task_id, session_id=task.session_id,
                                      task=codec.task_to_spec(task)))

    def send_cancel(self, task_id: str, reason: str) -> None:
        self._send(codec.new_envelope(pb.CANCEL, ORCH, task_id=task_id, cancel=pb.Cancel(reason=reason)))

    def send_terminate(self, reason: str) -> None:
        self._send(codec.new_envelope(pb.TERMINATE, ORCH, terminate=pb.Terminate(reason=reason)))

    def send_approval(self, task_id: str, response: ApprovalResponse) -> None:
        self._send(codec.new_envelope(pb.APPROVAL_RESPONSE, ORCH, task_id=task_id,
                                      approval_response=codec.approval_response_to_pb(response)))

    def send_reply(self, correlation_id: str, result: TaskResult) -> None:
        self._send(codec.new_envelope(pb.REPLY, ORCH, task_id=result.task_id, correlation_id=correlation_id,
                                      reply=pb.Reply(result=codec.result_to_pb(result))))

    def send_ping(self) -> None:
        self._send(codec.new_envelope(pb.PING, ORCH, ping=pb.Ping(sent_ms=codec.new_envelope(0).timestamp_ms)))

    def close(self, reason: str) -> None:
        self.outbox.close(reason)


def _event_envelope(event: TaskEvent) -> pb.Envelope:
    """The TASK_EVENT envelope of an event; an agent's own protobuf event is re-stamped
    (seq, agent, parent) rather than encoded again: token deltas are the hot path."""
    wire = getattr(event, "_wire", None)
    if wire is None:
        return codec.event_envelope(event)
    env = pb.Envelope(id=codec.fast_id(), sender=ORCH, type=pb.TASK_EVENT, task_id=event.task_id,
                      timestamp_ms=event.ts_ms, event=wire)
    m = env.event
    m.seq = event.seq
    m.agent_id = event.agent_id
    m.parent_task_id = event.parent_task_id
    return env


class EventSubscription:
    """A client's view of task events, pushed into an outbox as TASK_EVENT envelopes."""

    def __init__(self, outbox: Outbox, limit: int, end_task: str = "") -> None:
        self.outbox = outbox
        self.limit = limit
        self.end_task = end_task
        self.overflowed = False

    def deliver(self, event: TaskEvent) -> bool:
        if len(self.outbox) >= self.limit:
            self.overflowed = True
            return False
        self.outbox.put(_event_envelope(event))
        if self.end_task and event.task_id == self.end_task and event.kind == "result":
            self.outbox.close("task finished")
        return True

    def close(self, reason: str) -> None:
        if not self.end_task or self.overflowed:
            self.outbox.close(reason)


class MeshServicer(pb_grpc.MeshServicer):
    def __init__(self, mesh: Mesh, max_message_bytes: int, max_pending_events: int,
                 workspaces: Path | None = None) -> None:
        self.mesh = mesh
        self.max_message_bytes = max_message_bytes
        self.max_pending_events = max_pending_events
        self.workspaces = workspaces
        self.heartbeat_ms = int(mesh.heartbeat_interval * 1000)
        self.first_message_timeout = 60.0
        self.accepting = True

    # ------------------------------------------------------------------ helpers
    async def _identity(self, context: grpc.aio.ServicerContext, role: str | None = None) -> Identity:
        try:
            ident = peer_identity(context)
        except CertError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"certificate not accepted: {exc}")
            raise AssertionError("unreachable") from None
        if role is not None and ident.role != role:
            what = "connect as an agent" if role == "agent" else "submit or change work (client role needed)"
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {ident.role} certificate ({ident.name}) cannot {what}; "
                f"issue one with `orchgpt certs issue NAME --role {role}`",
            )
        return ident

    async def _abort_routing(self, context: grpc.aio.ServicerContext, exc: RoutingError) -> None:
        await context.abort(_status_for(exc.code), str(exc))

    # ------------------------------------------------------------------ agents
    async def Connect(self, request_iterator: AsyncIterator[pb.Batch], context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        # context.read()/context.write() rather than an async generator: measurably less
        # overhead per frame on this, the hot path (bench/README.md).
        ident = await self._identity(context, role="agent")
        if not self.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchgpt is shutting down")
        agent_id = ident.name
        try:
            first = await asyncio.wait_for(context.read(), timeout=self.first_message_timeout)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no REGISTER within {self.first_message_timeout:g}s of connecting")
        if first is grpc.aio.EOF:
            return
        if not first.envelopes or first.envelopes[0].type != pb.REGISTER or not first.envelopes[0].HasField("register"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "the first message on Connect must be a REGISTER envelope")
        reg_env = first.envelopes[0]
        if reg_env.sender and reg_env.sender != agent_id:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"sender {reg_env.sender!r} does not match the certificate identity {agent_id!r}")
        r = reg_env.register
        if agent_id.startswith(LOCAL_PREFIX) and not (self.mesh.spawner and self.mesh.spawner.is_local(agent_id)):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"the name {agent_id!r} is reserved for agents this orchestrator spawns")
        try:
            pending = [codec.result_from_pb(x) for x in r.pending_results]
        except codec.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        link = GrpcAgentLink(agent_id, outbox)
        host = r.host or context.peer()
        try:
            self.mesh.register(agent_id, Registration(r.agent_type, list(r.capabilities), host, r.pid, r.version,
                                                      pending, r.current_task), link)
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        outbox.put_front(codec.new_envelope(
            pb.REGISTERED, ORCH, correlation_id=reg_env.id, to_agent=agent_id,
            registered=pb.Registered(agent_id=agent_id, heartbeat_interval_ms=self.heartbeat_ms,
                                     max_message_bytes=self.max_message_bytes,
                                     reconnect_grace_ms=int(self.mesh.reconnect_grace * 1000))))
        # the rest of the first batch
        for env in first.envelopes[1:]:
            self._from_agent(agent_id, env, outbox)
        reader = asyncio.create_task(self._read_agent(agent_id, context, outbox, link))
        reason = "stream closed"
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    reason = outbox.dropped_reason or reason
                    break
                await context.write(batch)
        except asyncio.CancelledError:
            reason = "connection lost"
            raise
        finally:
            reader.cancel()
            if not reader.done() or reader.cancelled():
                reason = reason if outbox.closed else "connection lost"
            self.mesh.disconnect(agent_id, link, reason)

    async def _read_agent(self, agent_id: str, context: grpc.aio.ServicerContext, outbox: Outbox,
                          link: GrpcAgentLink) -> None:
        touch, handle = self.mesh.touch, self._from_agent
        try:
            while True:
                batch = await context.read()
                if batch is grpc.aio.EOF:
                    break
                touch(agent_id)
                for env in batch.envelopes:
                    handle(agent_id, env, outbox)
            outbox.close("agent closed the stream")
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError:
            outbox.close("connection lost")
        except Exception as exc:  # a bug must not take the daemon down
            log.exception("agent_stream_error", agent_id=agent_id, error=str(exc))
            outbox.close(f"stream error: {exc}")

    def _error(self, outbox: Outbox, agent_id: str, correlation_id: str, code: str, message: str) -> None:
        outbox.put(codec.new_envelope(pb.ERROR, ORCH, correlation_id=correlation_id, to_agent=agent_id,
                                      error=pb.Error(code=code, message=message)))

    def _from_agent(self, agent_id: str, env: pb.Envelope, outbox: Outbox) -> None:
        if env.sender != agent_id:
            log.warning("spoofed_sender", agent_id=agent_id, claimed=env.sender, type=pb.MessageType.Name(env.type))
            self._error(outbox, agent_id, env.id, "PERMISSION_DENIED",
                        f"sender {env.sender!r} does not match the certificate identity {agent_id!r}; message dropped")
            return
        t = env.type
        try:
            target = env.recipient.WhichOneof("target")
            if target in ("agent_id", "agent_type", "broadcast") and t not in (pb.TASK_EVENT, pb.REPLY, pb.DELEGATE_TASK):
                self._forward(agent_id, env, target, outbox)
            elif t == pb.TASK_EVENT:
                ev = codec.event_from_pb(env.event, env.timestamp_ms)
                ev._wire = env.event  # type: ignore[attr-defined]  # re-used by EventSubscription
                self.mesh.on_event(agent_id, ev)
            elif t == pb.REPLY:
                self.mesh.on_result(agent_id, codec.result_from_pb(env.reply.result))
            elif t == pb.RUN_REFUSED:
                self.mesh.on_refused(agent_id, env.task_id, env.refusal.reason, env.refusal.code)
            elif t == pb.DELEGATE_TASK:
                cmd, parent, inputs = codec.spec_to_command(env.task)
                try:
                    self.mesh.on_delegate(agent_id, cmd, parent or env.task_id, env.id, inputs)
                except RoutingError as exc:
                    self._error(outbox, agent_id, env.id, exc.code, str(exc))
                except StoreError as exc:
                    self._error(outbox, agent_id, env.id, "UNAVAILABLE", f"not accepted: {exc}")
            elif t in (pb.HEARTBEAT, pb.PONG):
                pass
            elif t == pb.PING:
                outbox.put(codec.new_envelope(pb.PONG, ORCH, correlation_id=env.id, to_agent=agent_id))
            else:
                self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT",
                            f"unexpected {pb.MessageType.Name(t)} message from an agent")
        except codec.DecodeError as exc:
            self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT", str(exc))

    def _forward(self, agent_id: str, env: pb.Envelope, target: str, outbox: Outbox) -> None:
        """Agent-to-agent traffic: forwarded unchanged (the hot path)."""
        agents = self.mesh.agents
        if target == "agent_id":
            dest = agents.get(env.recipient.agent_id)
            if dest is None:
                self._error(outbox, agent_id, env.id, "NOT_FOUND", f"no agent {env.recipient.agent_id!r} in the mesh")
                return
            dest.link.outbox.put(env)  # type: ignore[attr-defined]
        elif target == "agent_type":
            ids = [a for a, e in agents.items() if e.info.agent_type == env.recipient.agent_type]
            if not ids:
                self._error(outbox, agent_id, env.id, "NOT_FOUND", f"no agent of type {env.recipient.agent_type!r} in the mesh")
                return
            idle = [a for a in ids if agents[a].info.state == "idle"] or ids
            agents[idle[hash(env.id) % len(idle)]].link.outbox.put(env)  # type: ignore[attr-defined]
        else:
            for a, e in agents.items():
                if a != agent_id:
                    e.link.outbox.put(env)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ clients
    async def Submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Batch]:  # type: ignore[override]
        ident = await self._identity(context, role="client")
        if request.sender and request.sender != ident.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"sender {request.sender!r} does not match the certificate identity {ident.name!r}")
        if not self.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchgpt is shutting down; not accepting new work")
        try:
            cmd = codec.command_from_pb(request.command)
        except codec.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        try:
            task, _created = self.mesh.submit(cmd, submitted_by=f"{ident.role}:{ident.name}")
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not accepted: the store cannot be written: {exc}")
        async for b in self._follow(task.task_id, 0, outbox):
            yield b

    async def _follow(self, task_id: str, after_seq: int, outbox: Outbox) -> AsyncIterator[pb.Batch]:
        """Replay the stored events after ``after_seq``, then follow live ones (no await in between,
        so nothing is missed or doubled)."""
        sub = EventSubscription(outbox, self.max_pending_events, end_task=task_id)
        mesh = self.mesh
        mesh.flush()
        for ev in mesh.store.events(task_id, after_seq):
            outbox.put(codec.event_envelope(ev))
        if task_id in mesh.active:
            mesh.subscribe(sub, task_id)
        else:
            outbox.close("task finished")
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    break
                yield batch
        finally:
            mesh.unsubscribe(sub, task_id)

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Batch]:  # type: ignore[override]
        await self._identity(context)
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        if request.task_id:
            if self.mesh.get_task(request.task_id) is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no task {request.task_id!r}")
            async for b in self._follow(request.task_id, request.after_seq, outbox):
                yield b
            return
        sub = EventSubscription(outbox, self.max_pending_events)
        self.mesh.subscribe(sub)
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    if sub.overflowed:
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            "client too slow: event buffer full; watch again")
                    break
                yield batch
        finally:
            self.mesh.unsubscribe(sub)

    async def ListAgents(self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext) -> pb.ListAgentsResponse:
        await self._identity(context)
        return pb.ListAgentsResponse(agents=[codec.agent_to_pb(a) for a in self.mesh.list_agents(request.agent_type)])

    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.GetTaskResponse:
        await self._identity(context)
        t = self.mesh.get_task(request.task_id)
        if t is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task {request.task_id!r}")
        assert t is not None
        resp = pb.GetTaskResponse(task=codec.task_to_pb(t))
        if request.with_events:
            self.mesh.flush()
            resp.events.extend(codec.event_to_pb(e) for e in self.mesh.store.events(t.task_id))
        children = {c.task_id: c for c in self.mesh.store.children(t.task_id)}
        children.update({c.task_id: c for c in self.mesh.active.values() if c.parent_task_id == t.task_id})
        resp.children.extend(codec.task_to_pb(c) for c in sorted(children.values(), key=lambda c: c.created_ms))
        return resp

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        await self._identity(context)
        tasks = self.mesh.store.list_tasks(request.limit or 50, request.session_id, request.include_children)
        out = [self.mesh.active.get(t.task_id, t) for t in tasks]
        return pb.ListTasksResponse(tasks=[codec.task_to_pb(t) for t in out])

    async def CancelTask(self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext) -> pb.TaskInfo:
        await self._identity(context, role="client")
        try:
            t = self.mesh.cancel(request.task_id, request.reason)
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        return codec.task_to_pb(t)

    async def Approve(self, request: pb.ApproveRequest, context: grpc.aio.ServicerContext) -> pb.ApproveResponse:
        await self._identity(context, role="client")
        try:
            self.mesh.approve(request.task_id, codec.approval_response_from_pb(request.response))
        except codec.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        return pb.ApproveResponse()

    async def FetchArtifact(self, request: pb.FetchArtifactRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FileChunk]:  # type: ignore[override]
        await self._identity(context)
        t = self.mesh.get_task(request.task_id)
        if t is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task {request.task_id!r}")
        assert t is not None
        ws = (t.result.workspace if t.result else "") or (str(self.workspaces / t.task_id) if self.workspaces else "")
        if not ws:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id!r} has no workspace")
        root = Path(ws).resolve()
        target = (root / request.path).resolve()
        if not target.is_relative_to(root):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"path {request.path!r} is outside the task's workspace")
        if not target.is_file():
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no file {request.path!r} in the workspace of task {request.task_id} on this host")
        size = target.stat().st_size
        h = hashlib.sha256()
        offset = 0
        with target.open("rb") as f:
            while True:
                data = f.read(FILE_CHUNK)
                h.update(data)
                last = offset + len(data) >= size or not data
                yield pb.FileChunk(path=request.path, offset=offset, data=data, eof=last, size=size,
                                   sha256=h.hexdigest() if last else "")
                offset += len(data)
                if last:
                    break

    async def ListSessions(self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext) -> pb.ListSessionsResponse:
        await self._identity(context)
        self.mesh.flush()
        ss = self.mesh.store.list_sessions(request.limit or 50, request.published_only)
        return pb.ListSessionsResponse(sessions=[codec.session_to_pb(s) for s in ss])

    async def PublishSession(self, request: pb.PublishSessionRequest, context: grpc.aio.ServicerContext) -> pb.PublishSessionResponse:
        await self._identity(context, role="client")
        try:
            s = self.mesh.store.publish_session(request.session_id, list(request.tags))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.PublishSessionResponse(session=codec.session_to_pb(s))
