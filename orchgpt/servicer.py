"""The gRPC transport of the mesh: the Mesh service, agent links and client subscriptions.

Everything here speaks protobuf and converts at the edge (codec.py); the
decisions are made by mesh.Mesh.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from . import authz, codec, logs, stream_rules
from .artifacts import ArtifactError, open_artifact, workspace_name
from .batching import Outbox
from .certs import Identity
from .errors import CertError, RoutingError, StoreError
from .iac.v1 import iac_pb2 as pb
from .iac.v1 import iac_pb2_grpc as pb_grpc
from .limits import (
    EventBudget,
    PeerLimits,
    RateLimiter,
    StreamCutter,
    dropped_events_marker,
    input_too_large,
    page_tasks,
    parse_page_token,
)
from .mesh import LOCAL_PREFIX, Mesh, Registration
from .models import ApprovalResponse, EventKind, Task, TaskEvent, TaskResult
from .revocation import Revocations
from .tls import peer_identity
from .validate import envelope as invalid_envelope
from .wire_guard import Malformed

log = logs.get("orchgpt.servicer")

ORCH = authz.DAEMON
FILE_CHUNK = 256 * 1024
_TYPE_NAMES = {v: k for k, v in pb.MessageType.items()}


def _status_for(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


class GrpcAgentLink:
    """AgentLink over one Connect stream."""

    def __init__(self, agent_id: str, outbox: Outbox, runs: stream_rules.RunIds | None = None) -> None:
        self.agent_id = agent_id
        self.outbox = outbox
        self.runs = runs
        self.close_code = ""  # set when the daemon closes the stream: its ERROR code and status

    def _send(self, env: pb.Envelope) -> None:
        env.recipient.agent_id = self.agent_id
        self.outbox.put(env)

    def send_task(self, task: Task) -> None:
        env = codec.new_envelope(pb.RUN, ORCH, task_id=task.task_id, session_id=task.session_id,
                                 task=codec.task_to_spec(task))
        if self.runs is not None:  # a REPLY may name its task by correlation_id = this id
            self.runs.remember(self.agent_id, env.id, task.task_id)
        self._send(env)

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

    def close(self, reason: str, code: str = stream_rules.SHUTTING_DOWN) -> None:
        """End the stream: an ERROR envelope (code, reason) goes last, then the RPC ends with
        that status (Connect)."""
        if not self.outbox.closed:
            self.close_code = code
            self._send(codec.new_envelope(pb.ERROR, ORCH, error=pb.Error(code=code, message=reason)))
        self.outbox.close(reason)


def _event_envelope(event: TaskEvent, type_of: Callable[[str], str]) -> pb.Envelope:
    """The TASK_EVENT envelope of an event; an agent's own event is re-stamped from the wire
    form kept on arrival (codec.encode_event), not encoded again: token deltas are the hot path."""
    return codec.event_envelope(event, agent_type=event.agent_type or type_of(event.task_id))


class EventSubscription:
    """A client's view of task events, pushed into an outbox as TASK_EVENT envelopes."""

    def __init__(self, outbox: Outbox, limit: int, end_task: str = "",
                 type_of: Callable[[str], str] = lambda task_id: "",
                 visible: Callable[[str], bool] | None = None) -> None:
        self.outbox = outbox
        self.limit = limit
        self.end_task = end_task
        self.overflowed = False
        self.type_of = type_of  # task id -> agent type (TaskEvent.agent_type)
        self.visible = visible  # task id -> may this subscriber see it (Watch of every task)

    def deliver(self, event: TaskEvent) -> bool:
        if self.visible is not None and not self.visible(event.task_id):
            return True
        if len(self.outbox) >= self.limit:
            self.overflowed = True
            return False
        self.outbox.put(_event_envelope(event, self.type_of))
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
        self.revocation = Revocations()  # the server sets the daemon's (crl.pem in the certs dir)
        self.limits = PeerLimits()  # the server sets them from its settings (docs/security-limits.md)
        self.event_budget = EventBudget(self.limits.max_events_per_task)
        self.heartbeat_ms = int(mesh.heartbeat_interval * 1000)
        self.first_message_timeout = 60.0
        self.accepting = True
        self.runs = stream_rules.RunIds()  # RUN envelope ids, to match a REPLY by correlation_id
        self.commands = authz.OpenCommands()  # agent-to-agent COMMANDs awaiting their REPLY

    # ------------------------------------------------------------------ helpers
    async def _identity(self, context: grpc.aio.ServicerContext, role: str | None = None,
                        stream: bool = False) -> Identity:
        abort = self._refusal(context) if stream else context.abort
        try:
            ident = peer_identity(context)
        except CertError as exc:
            await abort(grpc.StatusCode.UNAUTHENTICATED, f"certificate not accepted: {exc}")
            raise AssertionError("unreachable") from None
        refused = self.revocation.check_on_call(ident)
        if refused:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refused)
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
            abort = self._refusal(context) if stream else context.abort
            await abort(_status_for(d.code), d.message)
        return ident

    async def _task_for(self, context: grpc.aio.ServicerContext, ident: Identity, rpc: str,
                        task_id: str) -> Task:
        """The task, when it exists and the caller may see it; NOT_FOUND otherwise (both alike)."""
        t = self.mesh.get_task(task_id) if task_id else None
        if t is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task {task_id!r}")
        assert t is not None
        d = authz.task_access(ident, rpc, t, self.mesh.get_task)
        if not d:
            log.info("task_access_refused", rpc=rpc, peer=ident.name, task_id=task_id, rule=d.rule)
            await context.abort(_status_for(d.code), d.message)
        return t

    async def _abort_routing(self, context: grpc.aio.ServicerContext, exc: RoutingError) -> None:
        await context.abort(_status_for(exc.code), str(exc))

    @staticmethod
    def _refusal(context: grpc.aio.ServicerContext, correlation_id: str = ""):  # type: ignore[no-untyped-def]
        """Connect's abort: an ERROR envelope with the code first, then the status (docs/protocol.md)."""
        async def refuse(code: grpc.StatusCode, message: str) -> None:
            log.warning("agent_stream_refused", peer=context.peer(), code=code.name, reason=message)
            err = codec.new_envelope(pb.ERROR, ORCH, correlation_id=correlation_id,
                                     error=pb.Error(code=code.name, message=message))
            try:
                await context.write(pb.Batch(envelopes=[err]))
            except Exception as exc:  # the peer is gone: the status is all there is
                log.debug("error_envelope_not_sent", error=str(exc))
            await context.abort(code, message)
        return refuse

    # ------------------------------------------------------------------ agents
    async def Connect(self, request_iterator: AsyncIterator[pb.Batch], context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        # context.read()/context.write() rather than an async generator: measurably less
        # overhead per frame on this, the hot path (bench/README.md).
        # Every refusal sends an ERROR envelope with the code, then ends the RPC with that status.
        ident = await self._authorize(context, "Connect", stream=True)
        refuse = self._refusal(context)
        if not self.accepting:
            await refuse(grpc.StatusCode.UNAVAILABLE, "orchgpt is shutting down")
        agent_id = ident.name
        try:
            first = await asyncio.wait_for(context.read(), timeout=self.first_message_timeout)
        except TimeoutError:
            await refuse(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"no REGISTER within {self.first_message_timeout:g}s of connecting")
        if first is grpc.aio.EOF:
            return
        refuse = self._refusal(context, first.envelopes[0].id if first.envelopes else "")
        if isinstance(first, Malformed):
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, first.detail)
        bad = invalid_envelope(first.envelopes[0]) if first.envelopes else ""
        if bad:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, bad)
        if not first.envelopes or first.envelopes[0].type != pb.REGISTER or not first.envelopes[0].HasField("register"):
            await refuse(grpc.StatusCode.FAILED_PRECONDITION,
                         "the first message on Connect must be a REGISTER envelope with the body `register`")
        reg_env = first.envelopes[0]
        if reg_env.sender and reg_env.sender != agent_id:
            await refuse(grpc.StatusCode.PERMISSION_DENIED,
                         f"sender {reg_env.sender!r} does not match the certificate identity {agent_id!r}")
        r = reg_env.register
        if agent_id.startswith(LOCAL_PREFIX) and not (self.mesh.spawner and self.mesh.spawner.is_local(agent_id)):
            await refuse(grpc.StatusCode.PERMISSION_DENIED,
                         f"the name {agent_id!r} is reserved for agents this orchestrator spawns")
        try:
            pending = [codec.result_from_pb(x) for x in r.pending_results]
        except codec.DecodeError as exc:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, f"register.pending_results: {exc}")
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        link = GrpcAgentLink(agent_id, outbox, self.runs)
        host = r.host or context.peer()
        cutter = self._guard_stream(context, outbox, agent_id)
        try:
            self.mesh.register(agent_id, Registration(r.agent_type, list(r.capabilities), host, r.pid, r.version,
                                                      pending, r.current_task), link)
        except RoutingError as exc:
            await refuse(_status_for(exc.code), str(exc))
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
            await self._end_stream(context, outbox)
            if link.close_code:  # closed by the daemon: its ERROR went last; end with that status
                await context.abort(_status_for(link.close_code), reason)
        except asyncio.CancelledError:
            reason = "connection lost"
            if not cutter.cut:
                raise
            reason = outbox.dropped_reason  # the daemon cut it: over its queue bound, or revoked
            log.warning("agent_cut", agent_id=agent_id, reason=reason)
            await self._end_stream(context, outbox)
        finally:
            reader.cancel()
            if not reader.done() or reader.cancelled():
                reason = reason if outbox.closed else "connection lost"
            self.mesh.disconnect(agent_id, link, reason)
            self.runs.prune(agent_id, {t.task_id for t in self.mesh.active.values() if t.agent_id == agent_id})
            if agent_id not in self.mesh.agents:
                self.commands.forget_agent(agent_id)

    async def _read_agent(self, agent_id: str, context: grpc.aio.ServicerContext, outbox: Outbox,
                          link: GrpcAgentLink) -> None:
        touch, handle = self.mesh.touch, self._from_agent
        gate = RateLimiter(self.limits.agent_messages_per_second, self.limits.agent_message_burst)
        try:
            while True:
                batch = await context.read()
                if batch is grpc.aio.EOF:
                    break
                touch(agent_id)
                if isinstance(batch, Malformed) or not gate.allow(len(batch.envelopes)):
                    if self._refuse_frame(agent_id, batch, gate, outbox):
                        continue
                    break
                for env in batch.envelopes:
                    handle(agent_id, env, outbox)
            outbox.close("agent closed the stream")
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, grpc.aio.AbortError):  # AbortError: the daemon cut the stream
            outbox.close("connection lost")
        except Exception as exc:  # a bug must not take the daemon down
            log.exception("agent_stream_error", agent_id=agent_id, error=str(exc))
            link.close(f"stream error: {exc}", stream_rules.STREAM_ERROR)

    def _error(self, outbox: Outbox, agent_id: str, correlation_id: str, code: str, message: str) -> None:
        outbox.put(codec.new_envelope(pb.ERROR, ORCH, correlation_id=correlation_id, to_agent=agent_id,
                                      error=pb.Error(code=code, message=message)))

    def _from_agent(self, agent_id: str, env: pb.Envelope, outbox: Outbox) -> None:
        bad = invalid_envelope(env)
        if bad:
            self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT", f"{bad}; message dropped")
            return
        if env.sender != agent_id:
            log.warning("spoofed_sender", agent_id=agent_id, claimed=env.sender, type=pb.MessageType.Name(env.type))
            self._error(outbox, agent_id, env.id, "PERMISSION_DENIED",
                        f"sender {env.sender!r} does not match the certificate identity {agent_id!r}; message dropped")
            return
        t = env.type
        target = env.recipient.WhichOneof("target")
        d = authz.from_agent(_TYPE_NAMES.get(t, f"UNKNOWN({t})"), env.WhichOneof("body"), target)
        if not d:
            self._refuse(agent_id, env, outbox, d)
            return
        try:
            if d.route == "agents":
                self._forward(agent_id, env, target or "", outbox)
            elif t == pb.TASK_EVENT:
                task_id = stream_rules.event_task_id(env)
                if self._over_event_budget(agent_id, task_id, env, outbox):
                    return
                ev = codec.event_from_pb(env.event, env.timestamp_ms)
                if ev.kind == EventKind.RESULT:
                    raise stream_rules.ProtocolError(
                        "INVALID_ARGUMENT", "a task's result goes in a REPLY envelope (body reply.result), "
                        "not in a TASK_EVENT; event dropped")
                if not ev.task_id:
                    ev.task_id = env.event.task_id = task_id
                ev.agent_type = env.event.agent_type = self._type_of(task_id)
                codec.encode_event(ev, env.event)  # relayed as it came (EventSubscription)
                self.mesh.on_event(agent_id, ev)
            elif t == pb.REPLY:
                self._on_reply(agent_id, env)
            elif t == pb.RUN_REFUSED:
                self.mesh.on_refused(agent_id, env.task_id, env.refusal.reason, env.refusal.code)
            elif t == pb.DELEGATE_TASK:
                cmd, parent, inputs = codec.spec_to_command(env.task)
                too_large = input_too_large(cmd.input, self.limits.max_task_input_bytes, "task.input")
                if too_large:
                    self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT", too_large)
                    return
                d = authz.delegation(cmd.options, self.mesh.active.get(parent or env.task_id), self.mesh.get_task)
                if not d:
                    self._refuse(agent_id, env, outbox, d)
                    return
                try:
                    self.mesh.on_delegate(agent_id, cmd, parent or env.task_id, env.id, inputs)
                except RoutingError as exc:
                    self._error(outbox, agent_id, env.id, exc.code, str(exc))
                except StoreError as exc:
                    self._error(outbox, agent_id, env.id, "UNAVAILABLE", f"not accepted: {exc}")
            elif t in (pb.HEARTBEAT, pb.PONG):
                pass
            elif t == pb.PING:
                pong = codec.new_envelope(pb.PONG, ORCH, correlation_id=env.id, to_agent=agent_id)
                if env.HasField("ping"):
                    pong.ping.CopyFrom(env.ping)  # echoed: the sender's round-trip time
                outbox.put(pong)
            elif t == pb.ERROR:  # logged, never answered (no ERROR ping-pong)
                log.warning("agent_error", agent_id=agent_id, code=env.error.code,
                            message=env.error.message[:500], correlation_id=env.correlation_id)
            else:
                self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT",
                            f"unexpected {pb.MessageType.Name(t)} message from an agent")
        except codec.DecodeError as exc:
            self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT", str(exc))
        except stream_rules.ProtocolError as exc:
            self._error(outbox, agent_id, env.id, exc.code, str(exc))

    def _on_reply(self, agent_id: str, env: pb.Envelope) -> None:
        """A task's result: matched by reply.result.task_id, the envelope's task_id, or
        correlation_id = the RUN envelope's id (docs/protocol.md)."""
        task_id = stream_rules.reply_task_id(agent_id, env, self.runs)
        result = codec.result_from_pb(env.reply.result)
        result.task_id = task_id
        if task_id not in self.mesh.active and self.mesh.store.get_task(task_id) is None:
            raise stream_rules.ProtocolError("NOT_FOUND", f"REPLY for task {task_id!r}: no such task")
        self.mesh.on_result(agent_id, result)
        self.runs.forget_task(agent_id, task_id)

    def _type_of(self, task_id: str) -> str:
        t = self.mesh.active.get(task_id)
        return t.agent_type if t is not None else ""

    def _refuse(self, agent_id: str, env: pb.Envelope, outbox: Outbox, d: authz.Decision) -> None:
        log.warning("envelope_refused", agent_id=agent_id, type=_TYPE_NAMES.get(env.type, str(env.type)),
                    rule=d.rule, to=env.recipient.WhichOneof("target") or "orchgpt")
        self._error(outbox, agent_id, env.id, d.code, d.message)

    def _forward(self, agent_id: str, env: pb.Envelope, target: str, outbox: Outbox) -> None:
        """Agent-to-agent traffic: forwarded unchanged (the hot path). A COMMAND is remembered
        until its REPLY (body payload), which goes only to the agent that asked."""
        agents = self.mesh.agents
        t = env.type
        # a COMMAND that carries a correlation_id answers another one (agentd answers with REPLY;
        # some peers answer with a COMMAND): only a fresh COMMAND waits for a REPLY
        ask = t == pb.COMMAND and not env.correlation_id
        if t == pb.REPLY:
            d = self.commands.answer(env.correlation_id, agent_id, env.recipient.agent_id)
            if not d:
                self._refuse(agent_id, env, outbox, d)
                return
        if target == "agent_id":
            dest_id = env.recipient.agent_id
            dest = agents.get(dest_id)
            if dest is None:
                self._error(outbox, agent_id, env.id, "NOT_FOUND", f"no agent {dest_id!r} in the mesh")
                return
            dest.link.outbox.put(env)  # type: ignore[attr-defined]
            if ask:
                self.commands.opened(env.id, agent_id, dest_id)
        elif target == "agent_type":
            ids = [a for a, e in agents.items() if e.info.agent_type == env.recipient.agent_type]
            if not ids:
                self._error(outbox, agent_id, env.id, "NOT_FOUND", f"no agent of type {env.recipient.agent_type!r} in the mesh")
                return
            idle = [a for a in ids if agents[a].info.state == "idle"] or ids
            dest_id = idle[hash(env.id) % len(idle)]
            agents[dest_id].link.outbox.put(env)  # type: ignore[attr-defined]
            if ask:
                self.commands.opened(env.id, agent_id, dest_id)
        else:
            for a, e in agents.items():
                if a != agent_id:
                    e.link.outbox.put(env)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ clients
    async def Submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Batch]:  # type: ignore[override]
        ident = await self._authorize(context, "Submit")
        if request.sender and request.sender != ident.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"sender {request.sender!r} does not match the certificate identity {ident.name!r}")
        if not self.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchgpt is shutting down; not accepting new work")
        try:
            cmd = codec.command_from_pb(request.command)
        except codec.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        d = self._submit_access(ident, cmd.task_id, cmd.session_id)
        if d and authz.principal(ident) != authz.ADMIN:
            d = authz.workspace_option(cmd.options, self.mesh.get_task, owner=authz.owner_of(ident))
        if not d:
            await context.abort(_status_for(d.code), d.message)
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        too_large = input_too_large(cmd.input, self.limits.max_task_input_bytes)
        if too_large:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, too_large)
        self._guard_stream(context, outbox)
        try:
            task, _created = self.mesh.submit(cmd, submitted_by=authz.owner_of(ident))
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not accepted: the store cannot be written: {exc}")
        async for b in self._follow(task.task_id, 0, outbox, task.agent_type):
            yield b
        await self._end_stream(context, outbox)

    def _submit_access(self, ident: Identity, task_id: str, session_id: str) -> authz.Decision:
        """An idempotency key or a session id of someone else's work is refused."""
        store = self.mesh.store
        existing = self.mesh.get_task(task_id) if task_id else None
        exists = bool(session_id) and bool(store.list_tasks(1, session_id, True))
        owned = bool(session_id) and bool(store.list_tasks(1, session_id, True, authz.owner_of(ident)))
        return authz.submit_access(ident, existing, self.mesh.get_task, session_id, exists, owned)

    async def _follow(self, task_id: str, after_seq: int, outbox: Outbox,
                      agent_type: str = "") -> AsyncIterator[pb.Batch]:
        """Replay the stored events after ``after_seq``, then follow live ones (no await in between,
        so nothing is missed or doubled)."""
        sub = EventSubscription(outbox, self.max_pending_events, end_task=task_id, type_of=self._type_of)
        mesh = self.mesh
        mesh.flush()
        for ev in mesh.store.events(task_id, after_seq):
            outbox.put(codec.event_envelope(ev, agent_type=agent_type))
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
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        self._guard_stream(context, outbox)
        if request.task_id:
            ident = await self._authorize(context, "Watch(task)")
            watched = await self._task_for(context, ident, "Watch(task)", request.task_id)
            async for b in self._follow(request.task_id, request.after_seq, outbox, watched.agent_type):
                yield b
            await self._end_stream(context, outbox)
            return
        ident = await self._authorize(context, "Watch(all)")
        owner = authz.list_owner(ident, "Watch(all)")
        sub = EventSubscription(outbox, self.max_pending_events, type_of=self._type_of,
                                visible=None if owner is None else self._owned_by(owner))
        self.mesh.subscribe(sub)
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    await self._end_stream(context, outbox)
                    if sub.overflowed:
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            "client too slow: event buffer full; watch again")
                    break
                yield batch
        finally:
            self.mesh.unsubscribe(sub)

    def _owned_by(self, owner: str) -> Callable[[str], bool]:
        seen: dict[str, bool] = {}
        get = self.mesh.get_task

        def visible(task_id: str) -> bool:
            ok = seen.get(task_id)
            if ok is None:
                t = get(task_id)
                ok = t is not None and authz.owns(owner, t, get)
                if len(seen) > 10_000:
                    seen.clear()
                seen[task_id] = ok
            return ok

        return visible

    async def ListAgents(self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext) -> pb.ListAgentsResponse:
        await self._authorize(context, "ListAgents")
        return pb.ListAgentsResponse(agents=[codec.agent_to_pb(a) for a in self.mesh.list_agents(request.agent_type)])

    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.GetTaskResponse:
        ident = await self._authorize(context, "GetTask")
        t = await self._task_for(context, ident, "GetTask", request.task_id)
        resp = pb.GetTaskResponse(task=codec.task_to_pb(t))
        if request.with_events:
            self.mesh.flush()
            resp.events.extend(codec.event_to_pb(e, t.agent_type) for e in self.mesh.store.events(t.task_id))
        children = {c.task_id: c for c in self.mesh.store.children(t.task_id)}
        children.update({c.task_id: c for c in self.mesh.active.values() if c.parent_task_id == t.task_id})
        resp.children.extend(codec.task_to_pb(c) for c in sorted(children.values(), key=lambda c: c.created_ms))
        return resp

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        ident = await self._authorize(context, "ListTasks")
        offset = parse_page_token(request.page_token)
        if offset is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a next_page_token from ListTasks")
        assert offset is not None
        limit = min(max(request.limit, 0) or 50, 1000)  # one page; next_page_token goes on
        tasks = self.mesh.store.list_tasks(offset + limit + 1, request.session_id, request.include_children,
                                           owner=authz.list_owner(ident, "ListTasks"))
        out = [self.mesh.active.get(t.task_id, t) for t in tasks[offset:offset + limit]]
        page, token = page_tasks((codec.task_to_pb(t) for t in out), offset, self.limits.list_page_bytes,
                                 self.limits.list_field_bytes, more=len(tasks) > offset + limit)
        return pb.ListTasksResponse(tasks=page, next_page_token=token)

    async def CancelTask(self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext) -> pb.TaskInfo:
        ident = await self._authorize(context, "CancelTask")
        await self._task_for(context, ident, "CancelTask", request.task_id)
        try:
            t = self.mesh.cancel(request.task_id, request.reason)
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        return codec.task_to_pb(t)

    async def Approve(self, request: pb.ApproveRequest, context: grpc.aio.ServicerContext) -> pb.ApproveResponse:
        ident = await self._authorize(context, "Approve")
        await self._task_for(context, ident, "Approve", request.task_id)
        try:
            self.mesh.approve(request.task_id, codec.approval_response_from_pb(request.response))
        except codec.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RoutingError as exc:
            await self._abort_routing(context, exc)
        return pb.ApproveResponse()

    async def FetchArtifact(self, request: pb.FetchArtifactRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FileChunk]:  # type: ignore[override]
        """A file of a task's workspace, from the daemon's own workspace root only (orchgpt.artifacts):
        the workspace an agent reported in its result is a label, never a path opened here."""
        ident = await self._authorize(context, "FetchArtifact")
        t = await self._task_for(context, ident, "FetchArtifact", request.task_id)
        try:
            if self.workspaces is None:
                raise ArtifactError(f"task {t.task_id!r} has no workspace on this host", "NOT_FOUND")
            f = open_artifact(self.workspaces, workspace_name(t, self.mesh.get_task), request.path)
        except ArtifactError as exc:
            msg = str(exc)
            if exc.code == "NOT_FOUND" and t.agent_id and not t.agent_id.startswith(LOCAL_PREFIX):
                msg += (f"; task {t.task_id} ran on agent {t.agent_id}, whose files stay on that agent's "
                        "host (fetch them there)")
            elif exc.code == "NOT_FOUND":
                msg += f" in the workspace of task {t.task_id} on this host"
            log.info("artifact_refused", task_id=t.task_id, peer=ident.name, code=exc.code)
            await context.abort(_status_for(exc.code), msg)
            raise AssertionError("unreachable") from None
        size = f.size
        h = hashlib.sha256()
        offset = 0
        for data in f.chunks(FILE_CHUNK):  # type: ignore[attr-defined]
            h.update(data)
            last = offset + len(data) >= size or not data
            yield pb.FileChunk(path=request.path, offset=offset, data=data, eof=last, size=size,
                               sha256=h.hexdigest() if last else "")
            offset += len(data)
            if last:
                break

    async def ListSessions(self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext) -> pb.ListSessionsResponse:
        ident = await self._authorize(context, "ListSessions")
        self.mesh.flush()
        # the gallery (published sessions) is every client's; otherwise a client's own sessions
        owner = None if request.published_only else authz.list_owner(ident, "ListSessions")
        ss = self.mesh.store.list_sessions(request.limit or 50, request.published_only, owner=owner)
        return pb.ListSessionsResponse(sessions=[codec.session_to_pb(s) for s in ss])

    async def PublishSession(self, request: pb.PublishSessionRequest, context: grpc.aio.ServicerContext) -> pb.PublishSessionResponse:
        ident = await self._authorize(context, "PublishSession")
        store = self.mesh.store
        owned = bool(request.session_id) and bool(
            store.list_tasks(1, request.session_id, True, authz.list_owner(ident, "PublishSession")))
        if not owned:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r}")
        try:
            s = self.mesh.store.publish_session(request.session_id, list(request.tags))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.PublishSessionResponse(session=codec.session_to_pb(s))

    # ------------------------------------------------------------------ limits and revocation
    # (orchgpt/limits.py, orchgpt/revocation.py, docs/security-limits.md)
    def _guard_stream(self, context: grpc.aio.ServicerContext, outbox: Outbox, agent_id: str = "") -> StreamCutter:
        """Bound ``outbox`` by max_stream_queue_bytes, and cut its stream when the peer stops
        reading or its certificate is revoked (tracked while the stream lives)."""
        ident = peer_identity(context)
        outbox.bound(self.limits.max_stream_queue_bytes)
        cutter = StreamCutter(outbox)

        def overflow() -> None:
            log.warning("stream_cut", peer=ident.name, role=ident.role, reason=outbox.dropped_reason)
            cutter()

        outbox.on_overflow = overflow
        if agent_id:
            outbox.farewell = lambda code, msg: codec.new_envelope(
                pb.ERROR, ORCH, to_agent=agent_id, error=pb.Error(code=code, message=msg))

        def revoked() -> None:
            msg = f"certificate revoked: {ident.name!r} (serial {ident.serial:x}) is on the revocation list"
            far = outbox.farewell
            outbox.abort("UNAUTHENTICATED", msg, last=far("UNAUTHENTICATED", msg) if far else None)
            cutter()

        cutter.on_revoked = revoked
        self.revocation.track(ident.serial, cutter)
        return cutter

    async def _end_stream(self, context: grpc.aio.ServicerContext, outbox: Outbox) -> None:
        """A stream the daemon cut (overflow, revocation) ends with that status."""
        if outbox.error is not None:
            await context.abort(_status_for(outbox.error[0]), outbox.error[1])

    def _refuse_frame(self, agent_id: str, batch: object, gate: RateLimiter, outbox: Outbox) -> bool:
        """An undecodable frame, or one over the agent's message rate: answer ERROR and drop it.
        False when the peer is abusive (it keeps on): then it is disconnected."""
        if isinstance(batch, Malformed):
            code, msg = "INVALID_ARGUMENT", batch.detail + "; frame dropped"
            gate.allow(max(1, gate.burst // 20))  # bad frames cost more of the agent's budget
        else:
            code = "RESOURCE_EXHAUSTED"
            msg = (f"more than {self.limits.agent_messages_per_second:g} messages per second "
                   f"(agent_messages_per_second, burst {gate.burst}); envelopes dropped")
        if gate.abusive:
            log.warning("agent_abusive", agent_id=agent_id, code=code, message=msg)
            err = codec.new_envelope(pb.ERROR, ORCH, to_agent=agent_id, error=pb.Error(
                code=code, message=f"{msg}; disconnected: the peer kept on"))
            outbox.abort(code, f"{msg}; disconnected: the peer kept on", last=err)
            return False
        self._error(outbox, agent_id, "", code, msg)
        return True

    def _over_event_budget(self, agent_id: str, task_id: str, env: pb.Envelope, outbox: Outbox) -> bool:
        """max_events_per_task: past it a task's events are dropped (one marker event, one ERROR)."""
        t = self.mesh.active.get(task_id)
        if t is None or t.agent_id != agent_id:
            return False  # stale; the mesh ignores it
        verdict = self.event_budget.admit(t.task_id, self.mesh.active.__contains__)
        if verdict == "ok":
            return False
        if verdict == "first":
            limit = self.event_budget.limit
            msg = (f"task {t.task_id} sent more than {limit} events (max_events_per_task); "
                   "its further events are dropped (its result is still recorded)")
            log.warning("event_limit", task_id=t.task_id, agent_id=agent_id, limit=limit)
            self._error(outbox, agent_id, env.id, "RESOURCE_EXHAUSTED", msg)
            self.mesh.on_event(agent_id, dropped_events_marker(t.task_id, msg))
        return True
