"""What the AMQP bridge publishes (Publishing, mixed into amqp.AmqpBridge): persistent messages,
progress with publisher confirms, and answers and dead letters committed atomically with the ack
of the message they answer (one AMQP transaction)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .. import logs
from . import amqp_wire as wire
from .amqp_conversation import REASON_HEADER, _describe, _Reconnect

if TYPE_CHECKING:
    from .amqp import BridgeConfig

log = logs.get("orchgpt.bridge.amqp")


class Publishing:
    """Publishing and committing (part of amqp.AmqpBridge)."""

    if TYPE_CHECKING:  # set by amqp.AmqpBridge
        cfg: BridgeConfig
        stats: dict[str, int]
        _tx_lock: asyncio.Lock
        _tx_channel: Any
        _pub_channel: Any
        _lost: asyncio.Event

    def _outgoing(
        self,
        body: bytes,
        *,
        correlation_id: str,
        message_id: str,
        headers: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        import aio_pika

        return aio_pika.Message(
            body,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id or None,
            message_id=message_id,
            headers=headers or None,
            timestamp=time.time(),
            app_id="orchgpt-bridge",
        )

    async def _publish_progress(self, routing_key: str, body: bytes, *, correlation_id: str, message_id: str) -> None:
        """Publish with a publisher confirm (raises when the broker did not take it)."""
        ch = self._pub_channel
        if ch is None or ch.is_closed:
            raise _Reconnect("publish channel closed")
        await ch.default_exchange.publish(
            self._outgoing(body, correlation_id=correlation_id, message_id=message_id), routing_key, timeout=30
        )

    async def _commit(self, message: Any, publishes: list[tuple[str, Any]]) -> None:
        """Publish ``publishes`` and ack ``message`` atomically (one AMQP transaction)."""
        ch = self._tx_channel
        async with self._tx_lock:
            if ch is None or ch.is_closed or message.channel is not (await ch.get_underlay_channel()):
                raise _Reconnect("consumer channel closed")
            try:
                for routing_key, msg in publishes:
                    await ch.default_exchange.publish(msg, routing_key)
                await message.ack()
                await ch.transaction().commit(timeout=30)
            except Exception as exc:
                self._lost.set()
                raise _Reconnect(f"commit failed: {_describe(exc)}") from exc

    def _route(self, message: Any) -> str:
        return message.reply_to or self.cfg.send_queue

    def _reply_correlation(self, message: Any) -> str:
        return message.correlation_id or message.message_id or ""

    async def _answer(self, message: Any, role: str, content: str, ident: str, **extra: Any) -> None:
        body = wire.encode(role, content, **extra)
        out = self._outgoing(body, correlation_id=self._reply_correlation(message), message_id=f"{ident}:answer")
        await self._commit(message, [(self._route(message), out)])

    async def _dead_letter(self, message: Any, reason: str, ident: str = "") -> None:
        """Move a message that can never be processed to the dead-letter queue, and tell the service."""
        headers = dict(message.headers or {})
        headers.update({REASON_HEADER: reason[:1000], "x-orchgpt-source-queue": self.cfg.receive_queue})
        dead = self._outgoing(
            message.body,
            correlation_id=message.correlation_id or "",
            message_id=message.message_id or f"dead:{ident or id(message)}",
            headers=headers,
            content_type=message.content_type or "text/plain",
        )
        reply = self._outgoing(
            wire.encode(wire.Role.SYSTEM, f"error: {reason}", error=reason),
            correlation_id=self._reply_correlation(message),
            message_id=f"{ident or 'dead'}:error",
        )
        await self._commit(message, [(self.cfg.dead_letter_queue, dead), (self._route(message), reply)])
        self.stats["dead_lettered"] += 1
        log.warning(
            "amqp_dead_lettered",
            reason=reason,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            queue=self.cfg.dead_letter_queue,
        )
