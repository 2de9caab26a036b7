"""The agents' side of the gRPC servicer: Connect streams, the AgentLink over one, and
what arrives on it (events, replies, refusals, delegations, agent-to-agent traffic).

Everything here speaks protobuf and converts at the edge (codec.py); the decisions
are made by mesh.Mesh, reached through its methods only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from . import authz, codec, logs, metrics_more, servicer_cluster, stream_rules, tracing, tracing_mesh
from .batching import Outbox
from .errors import RoutingError, StoreError
from .iac.v1 import iac_pb2 as pb
from .limits import (
    RateLimiter,
    dropped_events_marker,
    input_too_large,
)
from .mesh import LOCAL_PREFIX, Registration
from .models import EventKind
from .servicer_base import _TYPE_NAMES, ORCH, ServicerBase
from .servicer_link import GrpcAgentLink
from .servicer_uploads import AgentUploads
from .status import to_grpc
from .validate import envelope as invalid_envelope
from .wire.token_fold import fold_frame
from .wire_guard import Malformed

log = logs.get("orchgpt.servicer")


class AgentStreams(AgentUploads, ServicerBase):
    """Connect: one agent's stream (part of servicer.MeshServicer)."""

    async def Connect(self, request_iterator: AsyncIterator[pb.Batch], context: grpc.aio.ServicerContext) -> None:
        # context.read()/context.write() rather than an async generator: measurably less
        # overhead per frame on this, the hot path (bench/README.md).
        # Every refusal sends an ERROR envelope with the code, then ends the RPC with that status.
        ident = await self._authorize(context, "Connect", stream=True)
        refuse = self._refusal(context, unread=True)
        if not self.accepting:
            await refuse(grpc.StatusCode.UNAVAILABLE, "orchgpt is shutting down")
        agent_id = ident.name
        try:
            first = await asyncio.wait_for(context.read(), timeout=self.first_message_timeout)
        except TimeoutError:
            await refuse(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no REGISTER within {self.first_message_timeout:g}s of connecting"
            )
        if first is grpc.aio.EOF:
            return
        refuse = self._refusal(context, first.envelopes[0].id if first.envelopes else "")
        if isinstance(first, Malformed):
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, first.detail)
        bad = invalid_envelope(first.envelopes[0]) if first.envelopes else ""
        if bad:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, bad)
        if not first.envelopes or first.envelopes[0].type != pb.REGISTER or not first.envelopes[0].HasField("register"):
            await refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the first message on Connect must be a REGISTER envelope with the body `register`",
            )
        reg_env = first.envelopes[0]
        metrics_more.count_in(reg_env.type)
        if reg_env.sender and reg_env.sender != agent_id:
            await refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                f"sender {reg_env.sender!r} does not match the certificate identity {agent_id!r}",
            )
        r = reg_env.register
        if agent_id.startswith(LOCAL_PREFIX) and not self.mesh.is_spawned(agent_id):
            await refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the name {agent_id!r} is reserved for agents this orchestrator spawns",
            )
        try:
            pending = [codec.result_from_pb(x) for x in r.pending_results]
        except codec.DecodeError as exc:
            await refuse(to_grpc(exc.code), f"register.pending_results: {exc}")
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        link = GrpcAgentLink(agent_id, outbox, self.runs)
        host = r.host or context.peer()
        cutter = self._guard_stream(context, outbox, agent_id)
        try:
            self.mesh.register(
                agent_id,
                Registration(
                    r.agent_type,
                    list(r.capabilities) or self._declared_caps(r.agent_type),
                    host,
                    r.pid,
                    r.version,
                    pending,
                    r.current_task,
                    r.max_concurrent_tasks,
                    list(r.running_tasks),
                ),
                link,
            )
        except RoutingError as exc:
            await refuse(to_grpc(exc.code), str(exc))
        outbox.put_front(
            codec.new_envelope(
                pb.REGISTERED,
                ORCH,
                correlation_id=reg_env.id,
                to_agent=agent_id,
                registered=pb.Registered(
                    agent_id=agent_id,
                    heartbeat_interval_ms=int(self.mesh.heartbeat_for(agent_id) * 1000),
                    max_message_bytes=self.max_message_bytes,
                    reconnect_grace_ms=int(self.mesh.reconnect_grace * 1000),
                    definition=self._definition(r.agent_type),
                    max_concurrent_tasks=self.mesh.slots_of(agent_id),
                    agent_pings=True,  # an agent stating its interval in HEARTBEATs pings us itself (§5)
                ),
            )
        )
        # the rest of the first batch
        rest = list(first.envelopes[1:])
        # what this frame would otherwise hold for the stream's life (the first frame, closures):
        # memory per idle agent (issue 17)
        del first, reg_env, r, refuse, pending
        while rest:
            self._from_agent(agent_id, rest.pop(0), outbox)
        reader = asyncio.create_task(self._read_agent(agent_id, context, outbox, link))
        reason = "stream closed"
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    reason = outbox.dropped_reason or reason
                    break
                metrics_more.count_out(batch.envelopes)
                await context.write(batch)
                batch = None  # not kept while idle
            await self._end_stream(context, outbox)
            if link.close_code:  # closed by the daemon: its ERROR went last; end with that status
                await context.abort(to_grpc(link.close_code), reason)
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
            self.runs.prune(agent_id, self.mesh.tasks_on(agent_id))
            if not self.mesh.is_connected(agent_id):
                self.commands.forget_agent(agent_id)
                if self.artifact_store is not None:  # a cut upload is discarded; the agent resends
                    self.artifact_store.forget_agent(agent_id)

    async def _read_agent(
        self, agent_id: str, context: grpc.aio.ServicerContext, outbox: Outbox, link: GrpcAgentLink
    ) -> None:
        touch, handle, writing = self.mesh.touch, self._from_agent, self.upload_waits
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
                for env in fold_frame(batch.envelopes):  # a run of one task's token deltas: one event
                    if writing and agent_id in writing:  # its upload still going into the database
                        await self.upload_settled(agent_id)
                    if tracing.ENABLED:  # inside its task's span: log lines carry the trace ids
                        tracing_mesh.handle_in_task(handle, agent_id, env, outbox)
                    else:
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
        outbox.put(
            codec.new_envelope(
                pb.ERROR,
                ORCH,
                correlation_id=correlation_id,
                to_agent=agent_id,
                error=pb.Error(code=code, message=message),
            )
        )

    def _from_agent(self, agent_id: str, env: pb.Envelope, outbox: Outbox) -> None:
        metrics_more.count_in(env.type)
        bad = invalid_envelope(env)
        if bad:
            self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT", f"{bad}; message dropped")
            return
        if env.sender != agent_id:
            log.warning("spoofed_sender", agent_id=agent_id, claimed=env.sender, type=pb.MessageType.Name(env.type))
            self._error(
                outbox,
                agent_id,
                env.id,
                "PERMISSION_DENIED",
                f"sender {env.sender!r} does not match the certificate identity {agent_id!r}; message dropped",
            )
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
                        "INVALID_ARGUMENT",
                        "a task's result goes in a REPLY envelope (body reply.result), "
                        "not in a TASK_EVENT; event dropped",
                    )
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
                sub, parent, sub_id = codec.delegation_from_spec(env.task)
                too_large = input_too_large(sub.input, self.limits.max_task_input_bytes, "task.input")
                if too_large:
                    self._error(outbox, agent_id, env.id, "INVALID_ARGUMENT", too_large)
                    return
                d = authz.delegation(sub.options, self.mesh.active_task(parent or env.task_id), self.mesh.get_task)
                if not d:
                    self._refuse(agent_id, env, outbox, d)
                    return
                try:
                    with tracing.span(
                        "orchgpt.delegate",
                        (env.traceparent, env.tracestate),
                        "SERVER",
                        **{"orchgpt.agent.id": agent_id},
                    ):
                        self.mesh.on_delegate(agent_id, sub, parent or env.task_id, env.id, sub_id)
                except RoutingError as exc:
                    self._error(outbox, agent_id, env.id, exc.code, str(exc))
                except StoreError as exc:
                    self._error(outbox, agent_id, env.id, exc.code, f"not accepted: {exc}")
            elif t == pb.FILE_TRANSFER:
                self._on_upload(agent_id, env, outbox)
            elif t == pb.FILE_RESUME:
                self._on_resume(agent_id, env, outbox)
            elif t == pb.HEARTBEAT:  # its counters (metrics_more: orchgpt_agent_*_total)
                hb = env.heartbeat
                self.mesh.heartbeat_running(agent_id, list(hb.running_tasks))  # (slots cancelling stale tasks)
                if hb.heartbeat_interval_ms > 0:  # it watches us with its own PINGs; acknowledges an offer
                    self.mesh.interval_acknowledged(agent_id, hb.heartbeat_interval_ms / 1000, watches=True)
                if hb.llm_calls or hb.tool_calls:
                    entry = self.mesh.agents.get(agent_id)
                    at = entry.info.agent_type if entry is not None else "unknown"
                    metrics_more.REPORTS.report(
                        agent_id,
                        at,
                        (hb.llm_calls, hb.llm_input_tokens, hb.llm_output_tokens, hb.tool_calls, hb.tool_errors),
                    )
            elif t == pb.PONG:
                pass
            elif t == pb.PING:
                if env.ping.heartbeat_interval_ms > 0:  # its acknowledgement of an announced interval
                    self.mesh.interval_acknowledged(agent_id, env.ping.heartbeat_interval_ms / 1000)
                pong = codec.new_envelope(pb.PONG, ORCH, correlation_id=env.id, to_agent=agent_id)
                if env.HasField("ping"):
                    pong.ping.CopyFrom(env.ping)  # echoed: the sender's round-trip time
                outbox.put(pong)
            elif t == pb.ERROR:  # logged, never answered (no ERROR ping-pong)
                log.warning(
                    "agent_error",
                    agent_id=agent_id,
                    code=env.error.code,
                    message=env.error.message[:500],
                    correlation_id=env.correlation_id,
                )
            else:
                self._error(
                    outbox,
                    agent_id,
                    env.id,
                    "INVALID_ARGUMENT",
                    f"unexpected {pb.MessageType.Name(t)} message from an agent",
                )
        except codec.DecodeError as exc:
            self._error(outbox, agent_id, env.id, exc.code, str(exc))
        except stream_rules.ProtocolError as exc:
            self._error(outbox, agent_id, env.id, exc.code, str(exc))

    def _on_reply(self, agent_id: str, env: pb.Envelope) -> None:
        """A task's result: matched by reply.result.task_id, the envelope's task_id, or
        correlation_id = the RUN envelope's id (docs/protocol.md)."""
        task_id = stream_rules.reply_task_id(agent_id, env, self.runs)
        result = codec.result_from_pb(env.reply.result)
        result.task_id = task_id
        if not self.mesh.task_exists(task_id):
            raise stream_rules.ProtocolError("NOT_FOUND", f"REPLY for task {task_id!r}: no such task")
        self.mesh.on_result(agent_id, result)
        self.runs.forget_task(agent_id, task_id)

    def _refuse(self, agent_id: str, env: pb.Envelope, outbox: Outbox, d: authz.Decision) -> None:
        log.warning(
            "envelope_refused",
            agent_id=agent_id,
            type=_TYPE_NAMES.get(env.type, str(env.type)),
            rule=d.rule,
            to=env.recipient.WhichOneof("target") or "orchgpt",
        )
        self._error(outbox, agent_id, env.id, d.code, d.message)

    def _forward(self, agent_id: str, env: pb.Envelope, target: str, outbox: Outbox) -> None:
        """Agent-to-agent traffic: forwarded unchanged (the hot path). A COMMAND is remembered
        until its REPLY (body payload), which goes only to the agent that asked."""
        mesh = self.mesh
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
            dest = mesh.link_of(dest_id)
            if dest is None:
                if not servicer_cluster.to_agent(mesh, env, dest_id, paired=t == pb.REPLY):  # (another daemon's)
                    self._error(outbox, agent_id, env.id, "NOT_FOUND", f"no agent {dest_id!r} in the mesh")
                return
            dest.forward(env)
            if ask:
                self.commands.opened(env.id, agent_id, dest_id)
        elif target == "agent_type":
            dest_id = mesh.pick_agent(env.recipient.agent_type, hash(env.id))
            busy = bool(dest_id) and not mesh.is_idle(dest_id)
            if busy and servicer_cluster.to_type(mesh, env, env.recipient.agent_type, idle_only=True):
                return  # all busy here: an idle one of another daemon of the cluster
            link = mesh.link_of(dest_id) if dest_id else None
            if link is None:
                if not servicer_cluster.to_type(mesh, env, env.recipient.agent_type):
                    self._error(
                        outbox,
                        agent_id,
                        env.id,
                        "NOT_FOUND",
                        f"no agent of type {env.recipient.agent_type!r} in the mesh",
                    )
                return
            link.forward(env)
            if ask:
                self.commands.opened(env.id, agent_id, dest_id)
        else:
            for other in mesh.links_except(agent_id):
                other.forward(env)
            servicer_cluster.to_all(mesh, env, agent_id)  # and the other daemons' agents

    def _refuse_frame(self, agent_id: str, batch: object, gate: RateLimiter, outbox: Outbox) -> bool:
        """An undecodable frame, or one over the agent's message rate: answer ERROR and drop it.
        False when the peer is abusive (it keeps on): then it is disconnected."""
        if isinstance(batch, Malformed):
            code, msg = "INVALID_ARGUMENT", batch.detail + "; frame dropped"
            gate.allow(max(1, gate.burst // 20))  # bad frames cost more of the agent's budget
        else:
            code = "RESOURCE_EXHAUSTED"
            msg = (
                f"more than {self.limits.agent_messages_per_second:g} messages per second "
                f"(agent_messages_per_second, burst {gate.burst}); envelopes dropped"
            )
        if gate.abusive:
            log.warning("agent_abusive", agent_id=agent_id, code=code, message=msg)
            err = codec.new_envelope(
                pb.ERROR,
                ORCH,
                to_agent=agent_id,
                error=pb.Error(code=code, message=f"{msg}; disconnected: the peer kept on"),
            )
            outbox.abort(code, f"{msg}; disconnected: the peer kept on", last=err)
            return False
        self._error(outbox, agent_id, "", code, msg)
        return True

    def _over_event_budget(self, agent_id: str, task_id: str, env: pb.Envelope, outbox: Outbox) -> bool:
        """max_events_per_task: past it a task's events are dropped (one marker event, one ERROR)."""
        t = self.mesh.active_task(task_id)
        if t is None or t.agent_id != agent_id:
            return False  # stale; the mesh ignores it
        verdict = self.event_budget.admit(t.task_id, self.mesh.is_active, env.event.deltas or 1)
        if verdict == "ok":
            return False
        if verdict == "first":
            limit = self.event_budget.limit
            msg = (
                f"task {t.task_id} sent more than {limit} events (max_events_per_task); "
                "its further events are dropped (its result is still recorded)"
            )
            log.warning("event_limit", task_id=t.task_id, agent_id=agent_id, limit=limit)
            self._error(outbox, agent_id, env.id, "RESOURCE_EXHAUSTED", msg)
            self.mesh.on_event(agent_id, dropped_events_marker(t.task_id, msg))
        return True
