"""agentd's connection to orchgpt: one Connect stream, reconnected with backoff.

Registers first (type, capabilities, host, results kept while disconnected,
the task still running), heartbeats, runs one task at a time and streams its
events, answers pings, carries delegation and approval round trips.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from orchgpt import authz, logs
from orchgpt.addresses import AddressRing
from orchgpt.certs import CertPaths
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import (
    ApprovalRequest,
    ApprovalResponse,
    Delegation,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
)
from orchgpt.tls import secure_channel
from orchgpt.wire import codec
from orchgpt.wire import journal as results_journal
from orchgpt.wire.batching import Outbox
from orchgpt.wire.token_fold import LINGER_S, TokenOutbox

from . import __version__, heartbeat, inputs, telemetry, uploads
from .errors import AskError, AskTimeout, DelegationError, TaskFailed
from .link_results import PendingResults
from .runtime import Agent, TaskContext

log = logs.get("agentd.link")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
_TYPE_NAMES = {v: k for k, v in pb.MessageType.items()}


class Link(PendingResults):
    def __init__(
        self,
        agent: Agent,
        name: str,
        address: str,
        certs: CertPaths,
        workspace_root: Path,
        server_name: str | None = None,
        workspace_for: Callable[[Task], Path] | None = None,
        journal: Path | None = None,
    ) -> None:
        self.agent = agent
        self.name = name
        self.ring = AddressRing(address)  # "A,B,C": fail over to the next daemon (issue 19)
        self.address = self.ring.current
        self.certs = certs
        self.server_name = server_name
        self.workspace_root = workspace_root
        self.workspace_for = workspace_for
        self.outbox: Outbox | None = None
        self.current: asyncio.Task[None] | None = None
        self.current_id = ""
        self.pending_results: list[TaskResult] = []
        # Results sent but not yet known to be stored by orchgpt: a REPLY queued just before
        # the orchestrator died is lost with it. They go again with the next REGISTER (orchgpt
        # ignores results of tasks it has finished) and are dropped once confirmed: by the
        # REGISTERED answer (orchgpt stores pending results before it answers), by the PONG to
        # the PING sent after a REPLY, or by the next RUN (orchgpt only dispatches to an agent
        # after storing its previous result).
        self.unconfirmed: dict[str, TaskResult] = {}
        # Every result goes to a journal on disk (fsynced) before it is reported and stays there
        # until orchgpt confirms it: a result survives the agent dying too (delivered after its
        # restart) and, for a spawned agent, the next orchgpt reads it (see orchgpt.journal).
        self.journal = journal
        self._reported: set[str] = set()  # task ids of the results in the last REGISTER
        self._confirm_on: dict[str, str] = {}  # PING id -> the task whose REPLY went just before it
        if journal is not None:
            kept = results_journal.read(journal)
            if kept:
                self.pending_results.extend(kept)
                log.info("journal_loaded", path=str(journal), results=len(kept))
        self._delegations: dict[str, asyncio.Future[TaskResult]] = {}
        self._approvals: dict[str, asyncio.Future[ApprovalResponse]] = {}
        self._asks: dict[str, asyncio.Future[bytes]] = {}  # COMMAND id -> its REPLY's payload
        self._answering: set[asyncio.Task[Any]] = set()
        self.resumes = uploads.Resumes(lambda: self.outbox, self._env)
        self.heartbeat_s = 5.0
        self.daemon_ack = False  # REGISTERED.agent_pings: our HEARTBEATs acknowledge a new interval
        self.token_linger_s = LINGER_S  # how long an idle stream's token deltas wait to be folded
        self.reconnect_grace_s = 0.0  # from REGISTERED: how long orchgpt holds our task for us
        self.connected = asyncio.Event()
        self.stopping = False
        self.terminated = False
        self.last_rx = time.monotonic()

    # ------------------------------------------------------------------ sending
    def _env(self, type_: pb.MessageType.ValueType, **fields: Any) -> pb.Envelope:
        return telemetry.stamp(codec.new_envelope(type_, self.name, **fields))

    def send(self, env: pb.Envelope) -> bool:
        ob = self.outbox
        return ob is not None and ob.put(env)

    def emit(self, ev: TaskEvent) -> None:
        """Events of the running task; dropped while disconnected (the result is kept)."""
        ob = self.outbox
        if isinstance(ob, TokenOutbox) and ev.kind == EventKind.TOKEN and not ev.data:  # folded: wire/token_fold.py
            ob.put_delta(ev.task_id, ev.text, lambda: codec.event_envelope(ev, sender=self.name))
        elif ob is not None:
            ob.put(codec.event_envelope(ev, sender=self.name))

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Connect and serve until stopped or terminated; reconnect with backoff."""
        delay = BACKOFF_MIN
        while not self.stopping:
            started = time.monotonic()
            try:
                await self._session()
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ):
                    log.error("registration_refused", code=code.name, detail=exc.details())
                    raise SystemExit(f"agentd: orchestrator refused this agent: {exc.details()}") from None
                log.warning("disconnected", code=code.name, detail=exc.details(), retry_in=round(delay, 2))
            except (OSError, asyncio.CancelledError) as exc:  # cancelled: by our watchdog (_heartbeat)
                if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                log.warning("disconnected", error=str(exc) or "orchestrator silent", retry_in=round(delay, 2))
            finally:
                self.connected.clear()
                self.outbox = None
            if self.stopping or self.terminated:
                break
            if time.monotonic() - started > 5:
                delay = BACKOFF_MIN
            self.address = self.ring.advance()
            if len(self.ring) > 1 and not self.ring.round_done():
                log.info("failover", orchestrator=self.address)
                await asyncio.sleep(0.05)  # the next daemon at once; backoff after a whole round
                continue
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        channel = secure_channel(self.address, self.certs, self.server_name)
        outbox = TokenOutbox(linger_s=self.token_linger_s)
        try:
            stub = pb_grpc.MeshStub(channel)
            reg = pb.Register(
                agent_type=self.agent.type,
                capabilities=list(self.agent.capabilities),
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                pending_results=[codec.result_to_pb(r) for r in self._report()],
                current_task=self.current_id if self.current and not self.current.done() else "",
            )
            outbox.put(self._env(pb.REGISTER, register=reg))
            call = stub.Connect(outbox.iterate())
            self.last_rx = time.monotonic()
            hb = asyncio.create_task(self._heartbeat(outbox, call))
            try:
                async for batch in call:
                    self.last_rx = time.monotonic()
                    for env in batch.envelopes:
                        self._on_envelope(env, outbox)
            finally:
                hb.cancel()
                outbox.close()
                if self.outbox is outbox:
                    self.outbox = None
        finally:
            await channel.close(grace=None)

    async def _heartbeat(self, outbox: Outbox, call: grpc.aio.StreamStreamCall[pb.Batch, pb.Batch]) -> None:
        await heartbeat.beat(self, outbox, call)  # and the watch on the daemon

    # ------------------------------------------------------------------ receiving
    def _on_envelope(self, env: pb.Envelope, outbox: Outbox) -> None:
        t = env.type
        body = env.WhichOneof("body")
        d = authz.agent_accepts(_TYPE_NAMES.get(t, f"UNKNOWN({t})"), body, env.sender)
        if not d:
            # control messages come from the orchestrator only (orchgpt.authz): a RUN, CANCEL,
            # TERMINATE or APPROVAL_RESPONSE another agent managed to send is dropped
            log.warning("envelope_refused", type=_TYPE_NAMES.get(t, str(t)), sender=env.sender, rule=d.rule)
            return
        if t == pb.REPLY and body == "payload":
            asked = self._asks.pop(env.correlation_id, None)
            if asked is not None and not asked.done():
                asked.set_result(env.payload)
            return
        if t == pb.REGISTERED:
            self.heartbeat_s = max(env.registered.heartbeat_interval_ms / 1000, 0.05)
            self.daemon_ack = env.registered.agent_pings
            self.outbox = outbox
            self._confirm_on.clear()  # PINGs of an earlier stream get no PONG
            self.reconnect_grace_s = env.registered.reconnect_grace_ms / 1000
            self._confirmed_at_register(outbox)
            define = getattr(self.agent, "on_definition", None)  # a declared type (agentd/declared.py)
            if define is not None:
                define(env.registered.definition.definition_json)
            self.connected.set()
            self.ring.succeeded()
            log.info("registered", agent_id=env.registered.agent_id, orchestrator=self.address)
        elif t == pb.RUN:
            if self.unconfirmed:
                self.unconfirmed.clear()
                self._truncate_journal()  # orchgpt stores a result before it dispatches again
            self._start_task(env)
        elif t == pb.CANCEL:
            if self.current and not self.current.done() and env.task_id == self.current_id:
                log.info("task_cancel_requested", task_id=env.task_id, reason=env.cancel.reason)
                self.current.cancel(env.cancel.reason or "cancelled")
        elif t == pb.TERMINATE:
            log.info("terminate_requested", reason=env.terminate.reason)
            self.terminated = True
            self.stopping = True
            if self.current and not self.current.done():
                self.current.cancel("agent terminated")
            outbox.close()
        elif t == pb.PING:  # receiving it is the point (the watchdog); our HEARTBEATs tell orchgpt we live
            ms = env.ping.heartbeat_interval_ms  # orchgpt rescaled our interval: adopt it and say so
            if ms > 0 and env.sender == authz.DAEMON:
                self.heartbeat_s = max(ms / 1000, 0.05)  # the watchdog's too (3 x heartbeat_s)
                if not self.daemon_ack:  # an older daemon: a PING says so (our next HEARTBEAT does, else)
                    outbox.put(self._env(pb.PING, ping=pb.Ping(heartbeat_interval_ms=ms)))
                log.info("heartbeat_interval", seconds=self.heartbeat_s)
        elif t == pb.PONG:
            self._confirmed_by_pong(env.correlation_id)
        elif t == pb.REPLY:
            fut = self._delegations.pop(env.correlation_id, None)
            if fut is not None and not fut.done():
                fut.set_result(codec.result_from_pb(env.reply.result))
        elif t == pb.APPROVAL_RESPONSE:
            r = codec.approval_response_from_pb(env.approval_response)
            afut = self._approvals.pop(r.request_id, None)
            if afut is not None and not afut.done():
                afut.set_result(r)
        elif t == pb.ERROR:
            fut = self._delegations.pop(env.correlation_id, None)
            asked = self._asks.pop(env.correlation_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(DelegationError(f"{env.error.code}: {env.error.message}"))
            elif asked is not None and not asked.done():
                asked.set_exception(AskError(f"{env.error.code}: {env.error.message}"))
            else:
                log.warning("orchestrator_error", code=env.error.code, message=env.error.message)
        else:
            self.on_message(env)

    def on_message(self, env: pb.Envelope) -> None:
        """Agent-to-agent traffic (COMMAND, BROADCAST, FILE_TRANSFER, ...). A COMMAND is answered
        with a REPLY (body payload) by ``Agent.on_command`` (default: echo the payload)."""
        self.resumes.answer(env)  # FILE_RESUME_AT
        if env.type == pb.COMMAND and env.correlation_id == "":
            task = asyncio.get_running_loop().create_task(telemetry.answer(self, env))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, env: pb.Envelope) -> None:
        handler = getattr(self.agent, "on_command", None)
        try:
            out = await handler(env.sender, env.payload) if handler is not None else env.payload
        except Exception as exc:  # no REPLY: the asker's ask() times out (agents exchange no ERRORs)
            log.warning("command_failed", sender=env.sender, command_id=env.id, error=str(exc))
            return
        self.send(self._env(pb.REPLY, to_agent=env.sender, correlation_id=env.id, payload=bytes(out)))

    async def ask(self, to: str, payload: bytes, timeout: float = 30.0) -> bytes:
        """Send a COMMAND to another agent and wait for its REPLY's payload.

        ``to`` is an agent id, or ``type:NAME`` for any agent of type NAME."""
        if to.startswith("type:"):
            env = self._env(pb.COMMAND, to_type=to[5:], payload=payload)
        else:
            env = self._env(pb.COMMAND, to_agent=to, payload=payload)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._asks[env.id] = fut
        try:
            if not self.send(env):
                raise AskError("not connected to the orchestrator")
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise AskTimeout(f"no reply from {to} within {timeout:g}s") from None
        finally:
            self._asks.pop(env.id, None)

    # ------------------------------------------------------------------ tasks
    def _start_task(self, env: pb.Envelope) -> None:
        spec = env.task
        if self.current is not None and not self.current.done():
            if spec.task_id == self.current_id:
                return  # a duplicate after reconnect
            # not a failure of the task: orchgpt requeues it without counting an attempt
            busy = f"agent {self.name} is busy with {self.current_id}"
            self.send(
                self._env(
                    pb.RUN_REFUSED,
                    task_id=spec.task_id,
                    correlation_id=env.id,
                    refusal=pb.Refusal(code="BUSY", reason=busy),
                )
            )
            log.info("run_refused", task_id=spec.task_id, busy_with=self.current_id)
            return
        req = codec.task_from_spec(spec)
        self.current_id = req.task_id
        self.current = asyncio.create_task(telemetry.run(self, req, env), name=f"task:{req.task_id}")

    def _workspace(self, req: Task) -> Path:
        if self.workspace_for is not None:
            return self.workspace_for(req)
        ws = self.workspace_root / req.task_id
        ws.mkdir(parents=True, exist_ok=True)
        return ws

    async def _run_task(self, req: Task, run_id: str) -> None:
        started = time.monotonic()
        ctx: TaskContext | None = None
        try:
            ws = self._workspace(req)
            ctx = TaskContext(
                req, ws, self.name, self.emit, self._delegate, self._approve, self.agent.settings, ask=self.ask
            )
            ctx.status(f"running on {self.name}", TaskState.RUNNING)
            await inputs.fetch(ctx, self.address, self.certs, self.server_name)  # earlier sub-tasks' files
            outcome = await self.agent.run(ctx)
            state = TaskState.SUCCEEDED if outcome.ok else TaskState.FAILED
            result = TaskResult(
                req.task_id,
                state,
                output=outcome.output,
                error=outcome.error if not outcome.ok else "",
                data=outcome.data,
                checks=outcome.checks,
            )
        except asyncio.CancelledError:
            result = TaskResult(req.task_id, TaskState.CANCELLED, error="cancelled")
        except TaskFailed as exc:
            result = TaskResult(req.task_id, TaskState.FAILED, error=str(exc))
        except Exception as exc:
            log.exception("task_crashed", task_id=req.task_id)
            result = TaskResult(req.task_id, TaskState.FAILED, error=f"{type(exc).__name__}: {exc}")
        if ctx is not None:
            result.artifacts = list(ctx.artifacts.values())
            result.usage = ctx.usage
            result.workspace = str(ctx.workspace)
        result.agent_type = self.agent.type
        result.agent_id = self.name
        result.data.setdefault("attempt", str(req.attempts))
        result.data.setdefault("duration_s", f"{time.monotonic() - started:.3f}")
        if not (self.stopping and result.state == TaskState.CANCELLED and not self.terminated):
            self._journal(result)
        log.info("task_done", task_id=req.task_id, state=str(result.state), error=result.error or None)
        if self.stopping and result.state == TaskState.CANCELLED and not self.terminated:
            # stopped by a signal: no result, so that the orchestrator requeues the task elsewhere
            log.info("task_abandoned", task_id=req.task_id)
            return
        env = self._env(
            pb.REPLY, task_id=req.task_id, correlation_id=run_id, reply=pb.Reply(result=codec.result_to_pb(result))
        )
        # the files go first: when the REPLY is stored they are in the daemon's artifact store
        uploaded = True
        if result.artifacts and ctx is not None:
            try:
                uploaded = await uploads.upload(
                    lambda: self.outbox, self._env, req.task_id, Path(result.workspace), result.artifacts
                )
            except asyncio.CancelledError:  # cancelled while uploading: the result still goes
                log.info("artifact_upload_cancelled", task_id=req.task_id)
        if uploaded and self.send(env):
            self.unconfirmed[req.task_id] = result
            # orchgpt handles a stream's envelopes in order and stores a result before it reads
            # on: its PONG to this PING confirms the REPLY (the journal entry can go)
            ping = self._env(pb.PING, ping=pb.Ping(sent_ms=env.timestamp_ms))
            if self.send(ping):
                self._confirm_on[ping.id] = req.task_id
        else:
            self.pending_results.append(result)  # delivered with the next REGISTER
            log.info("result_kept_for_reconnect", task_id=req.task_id)

    async def _delegate(self, sub: Delegation) -> TaskResult:
        await asyncio.wait_for(self.connected.wait(), timeout=60)
        spec = codec.delegation_to_spec(sub, self.current_id)
        env = self._env(pb.DELEGATE_TASK, task_id=self.current_id, task=spec)
        fut: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        self._delegations[env.id] = fut
        if not self.send(env):
            self._delegations.pop(env.id, None)
            raise DelegationError("not connected to the orchestrator")
        return await fut

    async def _approve(self, req: ApprovalRequest) -> ApprovalResponse:
        fut: asyncio.Future[ApprovalResponse] = asyncio.get_running_loop().create_future()
        self._approvals[req.request_id] = fut
        try:
            return await fut
        finally:
            self._approvals.pop(req.request_id, None)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM: cancel the running task (reported as cancelled), close the stream."""
        self.stopping = True
        if self.current is not None and not self.current.done():
            self.current.cancel("agent stopping")
            try:
                await asyncio.wait_for(asyncio.shield(self.current), grace)
            except (TimeoutError, asyncio.CancelledError):
                pass
            await asyncio.sleep(0.05)  # let the REPLY leave
        if self.outbox is not None:
            self.outbox.close()
