"""`orchgpt bridge amqp`: services talk to mesh agents over RabbitMQ, durably.

How a message travels (see amqp_wire.py for the format):

1. A service publishes to the receive queue (default ``service-to-autogpt``).
2. The bridge decodes it and submits a task to the mesh with a task id derived from the
   AMQP message id (or the body + correlation id), so a redelivery re-attaches to the same
   task instead of running it again (the mesh dedupes by task id).
3. Progress (commands, reports, questions) is published on a confirm channel as it comes.
4. The final answer is published and the request acked in ONE AMQP transaction: either both
   happen or neither, so after a crash of the bridge the request is redelivered and answered
   from the stored task: every request is answered exactly once.

Poison messages (undecodable, rejected by the mesh, or redelivered too often) go to the
dead-letter queue with the reason in the ``x-orchgpt-reason`` header, and the service gets a
``SYSTEM`` error reply. Both connections (broker and mesh) are retried with backoff.
Questions (USER_INPUT) and kill codes: amqp_conversation.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .. import logs
from ..client import MeshClient
from ..errors import ClientError
from ..models import Command, EventKind, TaskResult, TaskState
from . import amqp_wire as wire
from .amqp_conversation import (  # noqa: F401  (constants re-exported)
    _SECRETS,
    AFFIRMATIVE,
    ASK_SETTLE_SECONDS,
    KILL_REASON,
    PERMANENT_CODES,
    REASON_HEADER,
    Conversations,
    _Conversation,
    _describe,
    _Question,
    _Reconnect,
)
from .amqp_publish import Publishing

log = logs.get("orchgpt.bridge.amqp")


@dataclass
class BridgeConfig:
    url: str
    agent: str = ""
    receive_queue: str = "service-to-autogpt"
    send_queue: str = "autogpt-to-service"
    dead_letter_queue: str = ""
    classic_queues: bool = False
    prefetch: int = 200
    max_redeliveries: int = 5
    ca_file: str = ""
    approval: bool = False
    reconnect_max: float = 10.0

    def __post_init__(self) -> None:
        if not self.dead_letter_queue:
            self.dead_letter_queue = f"{self.receive_queue}.dead-letter"


class AmqpBridge(Conversations, Publishing):
    def __init__(self, config: BridgeConfig, mesh: MeshClient) -> None:
        self.cfg = config
        password = wire.url_password(config.url)
        if len(password) >= 3:  # masking shorter strings would garble every log line
            _SECRETS.update({password, unquote(password)})
        self.mesh = mesh
        self.conversations: dict[str, _Conversation] = {}
        self.questions: dict[str, _Question] = {}  # by question id
        self._handlers: set[asyncio.Task[None]] = set()
        self._tx_lock = asyncio.Lock()
        self._tx_channel: Any = None
        self._pub_channel: Any = None
        self._lost = asyncio.Event()
        self.stats = {"answered": 0, "dead_lettered": 0, "redelivered": 0}

    # ------------------------------------------------------------------ connection
    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.cfg.url.lower().startswith("amqps://"):
            return None
        return ssl.create_default_context(cafile=self.cfg.ca_file or None)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; reconnect to the broker with backoff."""
        import aio_pika

        delay = 0.2
        while not stop.is_set():
            conn = None
            try:
                ctx = self._ssl_context()
                kwargs: dict[str, Any] = {"timeout": 10}
                if ctx is not None:
                    kwargs["ssl_context"] = ctx
                conn = await aio_pika.connect(self.cfg.url, **kwargs)
                await self._setup(conn)
                log.info(
                    "amqp_connected",
                    url=wire.mask_url(self.cfg.url),
                    receive_queue=self.cfg.receive_queue,
                    send_queue=self.cfg.send_queue,
                    agent=self.cfg.agent or None,
                )
                delay = 0.2
                await self._wait_lost(conn, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "amqp_unavailable", url=wire.mask_url(self.cfg.url), error=_describe(exc), retry_in=round(delay, 2)
                )
            finally:
                # Close first (no more deliveries, uncommitted transactions rolled back, unacked
                # requests requeued), then drop the work in flight: it is redone on redelivery.
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5)
                self._tx_channel = self._pub_channel = None
                await self._drop_handlers()
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.cfg.reconnect_max) * (0.8 + 0.4 * random.random())

    async def _wait_lost(self, conn: Any, stop: asyncio.Event) -> None:
        self._lost.clear()
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._lost.wait()),
            asyncio.ensure_future(conn.closed()),
            asyncio.ensure_future(self._tx_channel.closed()),
            asyncio.ensure_future(self._pub_channel.closed()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not stop.is_set():
            log.warning("amqp_connection_lost", url=wire.mask_url(self.cfg.url))

    async def _declare(self, conn: Any, name: str) -> None:
        args = {} if self.cfg.classic_queues else {"x-queue-type": "quorum"}
        ch = await conn.channel()
        try:
            await ch.declare_queue(name, durable=True, arguments=args)
        except Exception as exc:
            # The queue exists with other settings (e.g. declared non-durable by an old service):
            # use it as it is rather than fail; say so.
            log.warning(
                "amqp_queue_mismatch",
                queue=name,
                wanted="durable " + ("classic" if not args else "quorum"),
                error=_describe(exc),
            )
            ch = await conn.channel()
            await ch.declare_queue(name, passive=True)
        finally:
            with contextlib.suppress(Exception):
                await ch.close()

    async def _setup(self, conn: Any) -> None:
        for q in (self.cfg.receive_queue, self.cfg.send_queue, self.cfg.dead_letter_queue):
            await self._declare(conn, q)
        self._pub_channel = await conn.channel(publisher_confirms=True)
        self._tx_channel = await conn.channel(publisher_confirms=False)
        await self._tx_channel.set_qos(prefetch_count=self.cfg.prefetch)
        await self._tx_channel.transaction().select()
        queue = await self._tx_channel.get_queue(self.cfg.receive_queue, ensure=False)
        await queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, message: Any) -> None:
        t = asyncio.create_task(self._handle(message))
        self._handlers.add(t)
        t.add_done_callback(self._handlers.discard)

    async def _drop_handlers(self) -> None:
        handlers = list(self._handlers)
        for t in handlers:
            t.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        self.questions.clear()
        self.conversations.clear()

    # ------------------------------------------------------------------ handling
    async def _handle(self, message: Any) -> None:
        try:
            await self._handle_inner(message)
        except _Reconnect as exc:
            log.warning("amqp_reconnecting", reason=str(exc))
            self._lost.set()
        except Exception as exc:  # a bug or an unexpected broker error: let the broker redeliver
            log.error("amqp_handler_failed", error=_describe(exc), message_id=message.message_id)
            self._lost.set()

    def _delivery_count(self, message: Any) -> int:
        n = (message.headers or {}).get("x-delivery-count")
        return int(n) if isinstance(n, int) else (1 if message.redelivered else 0)

    async def _handle_inner(self, message: Any) -> None:
        if message.redelivered:
            self.stats["redelivered"] += 1
        try:
            inbound = wire.parse_inbound(
                message.body,
                content_type=message.content_type or "",
                headers=dict(message.headers or {}),
                reply_to=message.reply_to or "",
                send_queue=self.cfg.send_queue,
                default_agent=self.cfg.agent,
            )
        except wire.PoisonMessage as exc:
            await self._dead_letter(message, exc.reason)
            return
        if inbound.kind == "kill":
            await self._kill(message, inbound)
            return
        q = self._question_for(message, inbound)
        if q is not None:
            await self._answer_question(message, inbound, q)
            return
        task_id = inbound.task_id or wire.derive_task_id(
            self.cfg.receive_queue,
            message.message_id or "",
            message.body,
            message.correlation_id or "",
            inbound.session_id,
        )
        if self._delivery_count(message) > self.cfg.max_redeliveries:
            reason = (
                f"redelivered {self._delivery_count(message)} times without an answer "
                f"(limit {self.cfg.max_redeliveries})"
            )
            with contextlib.suppress(ClientError):  # nobody waits for its answer any more
                await self.mesh.cancel(task_id, f"dead-lettered: {reason}")
            await self._dead_letter(message, reason, ident=task_id)
            return
        await self._run_task(message, inbound, task_id)

    async def _run_task(self, message: Any, inbound: wire.Inbound, task_id: str) -> None:
        cmd = Command(
            agent_type=inbound.agent_type,
            action=inbound.action,
            input=inbound.content,
            language=inbound.language,
            session_id=inbound.session_id,
            task_id=task_id,
            approval=inbound.approval or self.cfg.approval,
            options=dict(inbound.options),
        )
        conv = self.conversations.setdefault(inbound.session_id, _Conversation())
        conv.tasks.add(task_id)
        try:
            result = await self._follow(message, cmd)
        except ClientError as exc:
            await self._dead_letter(message, f"the mesh refused the task: {exc} ({exc.code})", ident=task_id)
            return
        finally:
            conv.tasks.discard(task_id)
            if not conv.tasks and self.conversations.get(inbound.session_id) is conv:
                del self.conversations[inbound.session_id]  # bounded: only conversations with work
            for qid in [k for k, q in self.questions.items() if q.task_id == task_id]:
                self.questions.pop(qid, None)
        if result.state == TaskState.CANCELLED and result.error.startswith(wire.KILL_FROM_SERVICE):
            # Ended by the service's kill code: that message got the SIGTERM_FROM_AUTOGPT answer.
            await self._commit(message, [])
            log.info("amqp_request_ended", task_id=task_id, reason=result.error)
            return
        role, content, extra = wire.result_message(result, inbound.session_id)
        await self._answer(message, role, content, task_id, **extra)
        self.stats["answered"] += 1
        log.info(
            "amqp_answered",
            task_id=task_id,
            state=str(result.state),
            session_id=inbound.session_id,
            correlation_id=message.correlation_id,
            redelivered=bool(message.redelivered),
        )

    async def _follow(self, message: Any, cmd: Command) -> TaskResult:
        """Submit (idempotently) and follow the task to its result; retry while the mesh is unreachable."""
        delay = 0.2
        accepted = False
        asking: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    async for ev in self.mesh.submit(cmd):
                        if not accepted:
                            accepted = True
                            log.info(
                                "amqp_task_accepted",
                                task_id=cmd.task_id,
                                agent_type=cmd.agent_type,
                                session_id=cmd.session_id,
                                redelivered=bool(message.redelivered),
                            )
                        if ev.kind == EventKind.RESULT and ev.task_id == cmd.task_id and ev.result is not None:
                            return ev.result
                        self._drop_answered(ev, asking)
                        await self._on_event(message, cmd, ev, asking)
                    # The stream ended without our result: ask for the task.
                    task, _, _ = await self.mesh.get_task(cmd.task_id, with_events=False)
                    if task.result is not None and task.state.terminal:
                        return task.result
                    raise ClientError("the event stream ended early", "UNAVAILABLE")
                except ClientError as exc:
                    if exc.code in PERMANENT_CODES:
                        raise
                    log.warning(
                        "mesh_unavailable", task_id=cmd.task_id, error=str(exc), code=exc.code, retry_in=round(delay, 2)
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max) * (0.8 + 0.4 * random.random())
        finally:
            for t in asking.values():
                t.cancel()

    def _drop_answered(self, ev: Any, asking: dict[str, asyncio.Task[None]]) -> None:
        """A task that asks waits for the answer, so any later event of it means its earlier questions
        were answered: forget them, and don't ask them again (they come back when events are replayed
        after a restart of the bridge)."""
        this = f"{ev.task_id}:{ev.approval.request_id}" if ev.kind == EventKind.APPROVAL and ev.approval else ""
        prefix = f"{ev.task_id}:"
        for qid in [k for k in (*asking, *self.questions) if k.startswith(prefix) and k != this]:
            t = asking.pop(qid, None)
            if t is not None:
                t.cancel()
            self.questions.pop(qid, None)

    async def _on_event(self, message: Any, cmd: Command, ev: Any, asking: dict[str, asyncio.Task[None]]) -> None:
        corr = self._reply_correlation(message)
        if ev.kind == EventKind.APPROVAL and ev.approval is not None:
            qid = f"{ev.task_id}:{ev.approval.request_id}"
            if qid not in asking and qid not in self.questions:
                # Asked after a moment without a later event: replayed questions that were answered
                # already are followed at once by the task's next events, and are never asked again.
                asking[qid] = asyncio.create_task(self._ask_soon(message, cmd, ev))
            return
        if ev.task_id != cmd.task_id:
            return  # sub-tasks' progress stays in the mesh
        out = wire.progress_message(ev)
        if out is None:
            return
        role, content, extra = out
        await self._publish_progress(
            self._route(message),
            wire.encode(role, content, **extra),
            correlation_id=corr,
            message_id=f"{cmd.task_id}:{ev.seq}",
        )
