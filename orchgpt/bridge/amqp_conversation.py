"""The AMQP bridge's conversations with a service: the questions (USER_INPUT) an agent asks
and their answers, and the kill codes that end a conversation (part of amqp.AmqpBridge);
with the constants and errors the bridge shares."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import logs
from ..errors import ClientError, ErrorCode, OrchgptError
from ..models import ApprovalDecision, ApprovalResponse, Command
from . import amqp_wire as wire

if TYPE_CHECKING:
    from ..client import MeshClient
    from .amqp import BridgeConfig

log = logs.get("orchgpt.bridge.amqp")

# gRPC codes after which resubmitting the same message can never work.
PERMANENT_CODES = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED", "OUT_OF_RANGE", "UNIMPLEMENTED"}
)
REASON_HEADER = "x-orchgpt-reason"
KILL_REASON = f"{wire.KILL_FROM_SERVICE}: the service ended the conversation"
# How long a question waits for a later event of its task before it is asked (see _on_event).
ASK_SETTLE_SECONDS = 0.3
AFFIRMATIVE = frozenset({"y", "yes", "ok", "okay", "approve", "approved", "sure", "go"})


@dataclass
class _Question:
    """A USER_INPUT waiting for the service's answer."""

    question_id: str
    task_id: str
    request_id: str
    session_id: str
    request_correlation_id: str


@dataclass
class _Conversation:
    tasks: set[str] = field(default_factory=set)


class _Reconnect(OrchgptError):
    """The broker connection or channel is gone: drop in-flight work, connect again."""

    code = ErrorCode.UNAVAILABLE


class Conversations:
    """Questions and kill codes (part of amqp.AmqpBridge)."""

    if TYPE_CHECKING:  # provided by amqp.AmqpBridge
        cfg: BridgeConfig
        mesh: MeshClient
        conversations: dict[str, _Conversation]
        questions: dict[str, _Question]
        _lost: asyncio.Event

        def _route(self, message: Any) -> str: ...
        async def _publish_progress(
            self, routing_key: str, body: bytes, *, correlation_id: str, message_id: str
        ) -> None: ...
        async def _commit(self, message: Any, publishes: list[tuple[str, Any]]) -> None: ...
        async def _answer(self, message: Any, role: str, content: str, ident: str, **extra: Any) -> None: ...
        async def _dead_letter(self, message: Any, reason: str, ident: str = "") -> None: ...

    # ------------------------------------------------------------------ questions (USER_INPUT)
    async def _ask_soon(self, message: Any, cmd: Command, ev: Any) -> None:
        try:
            await asyncio.sleep(ASK_SETTLE_SECONDS)
            await self._ask(message, cmd, ev)
        except _Reconnect as exc:
            log.warning("amqp_reconnecting", reason=str(exc))
            self._lost.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("amqp_ask_failed", error=_describe(exc), task_id=ev.task_id)
            self._lost.set()

    async def _ask(self, message: Any, cmd: Command, ev: Any) -> None:
        req = ev.approval
        qid = f"{ev.task_id}:{req.request_id}"
        if qid in self.questions:
            return
        q = _Question(qid, ev.task_id, req.request_id, cmd.session_id, message.correlation_id or "")
        self.questions[qid] = q
        text = req.summary or ev.text or f"approve {req.tool} {req.arguments_json}".strip()
        await self._publish_progress(
            self._route(message),
            wire.encode(
                wire.Role.USER_INPUT,
                text,
                task_id=ev.task_id,
                session_id=cmd.session_id,
                question_id=qid,
                tool=req.tool,
                arguments=req.arguments_json,
            ),
            correlation_id=qid,
            message_id=qid,
        )
        log.info("amqp_user_input_asked", task_id=ev.task_id, question_id=qid, session_id=cmd.session_id)

    def _question_for(self, message: Any, inbound: wire.Inbound) -> _Question | None:
        """The question this message answers: by correlation id (the question's, or the request's);
        a message without one answers its conversation's only open question."""
        corr = message.correlation_id or ""
        if corr:
            if corr in self.questions:
                return self.questions[corr]
            matches = [q for q in self.questions.values() if q.request_correlation_id == corr]
            return matches[0] if len(matches) == 1 else None
        open_ = [q for q in self.questions.values() if q.session_id == inbound.session_id]
        return open_[0] if len(open_) == 1 else None

    async def _answer_question(self, message: Any, inbound: wire.Inbound, q: _Question) -> None:
        answer = inbound.content
        if wire.is_negative(answer):
            self.questions.pop(q.question_id, None)
            with contextlib.suppress(ClientError):
                await self.mesh.cancel(q.task_id, f"{wire.KILL_FROM_SERVICE}: the user answered {answer!r}")
            await self._answer(
                message,
                wire.Role.SYSTEM,
                wire.KILL_FROM_AGENT,
                f"{q.question_id}:no",
                session_id=q.session_id,
                task_id=q.task_id,
            )
            return
        low = answer.strip().lower()
        if low in AFFIRMATIVE:
            resp = ApprovalResponse(q.request_id, ApprovalDecision.APPROVE)
        else:
            resp = ApprovalResponse(q.request_id, ApprovalDecision.FEEDBACK, feedback=answer)
        try:
            await self.mesh.approve(q.task_id, resp)
        except ClientError as exc:
            if exc.code in PERMANENT_CODES:
                await self._dead_letter(message, f"cannot answer the question of task {q.task_id}: {exc}")
                return
            raise _Reconnect(f"mesh unavailable: {exc}") from None
        self.questions.pop(q.question_id, None)
        await self._commit(message, [])
        log.info("amqp_user_input_answered", task_id=q.task_id, question_id=q.question_id, decision=str(resp.decision))

    # ------------------------------------------------------------------ kill codes
    async def _kill(self, message: Any, inbound: wire.Inbound) -> None:
        conv = self.conversations.get(inbound.session_id)
        ended = sorted(conv.tasks) if conv else []
        for task_id in ended:
            try:
                await self.mesh.cancel(task_id, KILL_REASON)
            except ClientError as exc:
                if exc.code not in PERMANENT_CODES:
                    raise _Reconnect(f"mesh unavailable: {exc}") from None
        ident = "kill-" + wire.derive_task_id(
            self.cfg.receive_queue,
            message.message_id or "",
            message.body,
            message.correlation_id or "",
            inbound.session_id,
        )
        await self._answer(message, wire.Role.SYSTEM, wire.KILL_FROM_AGENT, ident, session_id=inbound.session_id)
        log.info("amqp_conversation_ended", session_id=inbound.session_id, cancelled=len(ended))


_SECRETS: set[str] = set()


def _describe(exc: BaseException) -> str:
    """An error for the log: short, and without the broker password even if a library put it in."""
    text = str(exc) or type(exc).__name__
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text if len(text) < 300 else text[:300] + "..."
