"""agentd's connection to orchgpt: one Connect stream, reconnected with backoff.

Registers first (type, capabilities, host, results kept while disconnected,
the tasks still running, its slots), heartbeats, runs up to --concurrency tasks at once
(link_tasks.py) and streams their events, answers pings, carries delegation and approval
round trips.
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
    ApprovalResponse,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
)
from orchgpt.tls import secure_channel
from orchgpt.wire import codec
from orchgpt.wire import journal as results_journal
from orchgpt.wire.batching import Outbox
from orchgpt.wire.journal_writer import JournalWriter
from orchgpt.wire.token_fold import LINGER_S, TokenOutbox

from . import __version__, heartbeat, telemetry, uploads
from .errors import AskError, AskTimeout, DelegationError
from .link_results import PendingResults
from .link_tasks import MAX_CONCURRENCY, RunningTasks
from .runtime import Agent

log = logs.get("agentd.link")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
_TYPE_NAMES = {v: k for k, v in pb.MessageType.items()}


class Link(RunningTasks, PendingResults):
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
        concurrency: int = 1,
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
        self.concurrency = max(1, min(int(concurrency), MAX_CONCURRENCY))  # slots asked for
        self.slots = 1  # slots granted (REGISTERED)
        self.running: dict[str, asyncio.Task[None]] = {}  # task id -> its run (link_tasks.py)
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
        self._confirm_on: dict[str, list[str]] = {}  # PING id -> the tasks whose REPLYs went just before it
        self._replied: list[tuple[Outbox, str]] = []  # REPLYs put in this turn of the loop (link_results.py)
        self.journal_writer: JournalWriter | None = None
        if journal is not None:
            kept = results_journal.read(journal)
            if kept:
                self.pending_results.extend(kept)
                log.info("journal_loaded", path=str(journal), results=len(kept))
            self.journal_writer = JournalWriter(journal, [(r.task_id, codec.result_to_bytes(r)) for r in kept])
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
                current_task=self.current_id,
                max_concurrent_tasks=self.concurrency,
                running_tasks=self.running_ids(),
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
            self.granted(env.registered.max_concurrent_tasks)
            self._confirmed_at_register(outbox)
            define = getattr(self.agent, "on_definition", None)  # a declared type (agentd/declared.py)
            if define is not None:
                define(env.registered.definition.definition_json)
            self.connected.set()
            self.ring.succeeded()
            log.info("registered", agent_id=env.registered.agent_id, orchestrator=self.address)
        elif t == pb.RUN:
            self._start_task(env)
        elif t == pb.CANCEL:
            self.cancel_task(env.task_id, env.cancel.reason)
        elif t == pb.TERMINATE:
            log.info("terminate_requested", reason=env.terminate.reason)
            self.terminated = True
            self.stopping = True
            self.cancel_all("agent terminated")
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
