"""The AMQP bridge's wire format (no I/O here): what a service sends, what it gets back.

Compatible with the AutoGPT RabbitMQ plugin's services:

- in (receive queue): a plain UTF-8 string (the seed's services send that), or a JSON
  object with ``content`` and optionally ``agent``, ``action``, ``language``,
  ``session_id``, ``task_id``, ``options``, ``approval``;
- out (send queue, or the request's ``reply_to``): JSON ``{"role": ..., "content": ...}``
  with the seed's roles, plus ``task_id``/``session_id``/``state`` for those who want them;
- ``SIGTERM_FROM_SERVICE`` ends the conversation, answered by ``SIGTERM_FROM_AUTOGPT``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import ErrorCode, OrchgptError
from ..models import Action, EventKind, TaskEvent, TaskResult, TaskState

KILL_FROM_SERVICE = "SIGTERM_FROM_SERVICE"
KILL_FROM_AGENT = "SIGTERM_FROM_AUTOGPT"
# The seed's check_negative_response: such an answer to a question ends the conversation.
NEGATIVE_ANSWERS = frozenset({"no", "nope", "n", "negative"})
MAX_BODY_BYTES = 1 << 20
TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
SESSION_ID_RE = TASK_ID_RE
JSON_FIELDS = ("content", "agent", "action", "language", "session_id", "task_id", "options", "approval")


class Role(StrEnum):
    """The roles the seed's services parse."""

    ON_RESPONSE = "ON_RESPONSE"  # the agent's answer
    PRE_COMMAND = "PRE_COMMAND"  # a step/command the agent is running
    REPORT = "REPORT"  # progress and failures
    USER_INPUT = "USER_INPUT"  # the agent asks the user
    SYSTEM = "SYSTEM"  # control: kill codes, errors


class PoisonMessage(OrchgptError):
    """A message that can never be processed; ``reason`` says why (it goes to the dead-letter queue)."""

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Inbound:
    """One message of a service, decoded."""

    kind: str  # "task" | "kill"
    content: str
    session_id: str
    agent_type: str = ""
    action: Action = Action.RUN
    language: str = "python"
    task_id: str = ""
    options: dict[str, str] = field(default_factory=dict)
    approval: bool = False
    is_json: bool = False


def _hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def default_session(reply_to: str, send_queue: str) -> str:
    """The conversation of a service that names none: one per reply queue, as in the seed."""
    return "amqp-" + _hash("session", reply_to or send_queue)[:24]


def derive_task_id(receive_queue: str, message_id: str, body: bytes, correlation_id: str, session_id: str) -> str:
    """A task id that is the same for every redelivery of one message (so it never runs twice):
    from the AMQP message id, else from the body, correlation id and conversation."""
    if message_id:
        return "amqp-" + _hash("msgid", receive_queue, message_id)[:40]
    return "amqp-" + _hash("body", receive_queue, session_id, correlation_id, body.decode("utf-8", "replace"))[:40]


def _text(obj: dict[str, Any], name: str) -> str:
    v = obj.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise PoisonMessage(f"field {name!r} must be a string, not {type(v).__name__}")
    return v


def parse_inbound(
    body: bytes,
    *,
    content_type: str = "",
    headers: dict[str, Any] | None = None,
    reply_to: str = "",
    send_queue: str = "autogpt-to-service",
    default_agent: str = "",
) -> Inbound:
    """Decode a service's message; raise PoisonMessage with the reason when it cannot be used."""
    headers = headers or {}
    if len(body) > MAX_BODY_BYTES:
        raise PoisonMessage(f"message too large: {len(body)} bytes (limit {MAX_BODY_BYTES})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PoisonMessage(f"body is not UTF-8 text: {exc}") from None
    obj: dict[str, Any] | None = None
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json" or text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            if ctype == "application/json":
                raise PoisonMessage(f"body is not valid JSON: {exc}") from None
            parsed = None  # a plain string that happens to start with '{'
        if parsed is not None:
            if not isinstance(parsed, dict):
                raise PoisonMessage(f"a JSON body must be an object, not {type(parsed).__name__}")
            obj = parsed
    hdr_agent = headers.get("agent")
    hdr_session = headers.get("session_id") or headers.get("conversation")
    if obj is None:
        content, agent, session = text, "", ""
        msg = Inbound("task", content.strip(), "", is_json=False)
    else:
        content, agent, session = _text(obj, "content"), _text(obj, "agent"), _text(obj, "session_id")
        msg = Inbound("task", content.strip(), "", is_json=True)
        action = _text(obj, "action").strip().lower()
        if action:
            try:
                msg.action = Action(action)
            except ValueError:
                choices = ", ".join(a.value for a in Action)
                raise PoisonMessage(f"field 'action': unknown action {action!r} (one of {choices})") from None
        msg.language = _text(obj, "language").strip() or "python"
        msg.task_id = _text(obj, "task_id").strip()
        if msg.task_id and not TASK_ID_RE.match(msg.task_id):
            raise PoisonMessage(
                f"field 'task_id': invalid task id {msg.task_id!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
            )
        opts = obj.get("options")
        if opts is not None:
            if not isinstance(opts, dict) or not all(isinstance(v, (str, int, float, bool)) for v in opts.values()):
                raise PoisonMessage("field 'options' must be an object of strings or numbers")
            msg.options = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in opts.items()}
        approval = obj.get("approval", False)
        if not isinstance(approval, bool):
            raise PoisonMessage("field 'approval' must be true or false")
        msg.approval = approval
    session = (session or (hdr_session if isinstance(hdr_session, str) else "") or "").strip()
    if session and not SESSION_ID_RE.match(session):
        raise PoisonMessage(f"invalid session id {session!r}: use 1-64 letters, digits, '_', '.', ':' or '-'")
    msg.session_id = session or default_session(reply_to, send_queue)
    if msg.content == KILL_FROM_SERVICE:
        msg.kind = "kill"
        return msg
    msg.agent_type = (agent or (hdr_agent if isinstance(hdr_agent, str) else "") or default_agent).strip().lower()
    if not msg.agent_type:
        raise PoisonMessage("no agent type: pass --agent to the bridge, or an 'agent' field or header")
    if not msg.content and msg.action in (Action.RUN, Action.CREATE):
        raise PoisonMessage("empty message: nothing to send to the agent")
    return msg


def is_negative(answer: str) -> bool:
    return answer.strip().lower() in NEGATIVE_ANSWERS


def encode(role: str, content: str, **extra: Any) -> bytes:
    """An outgoing message: the seed's ``{"role", "content"}`` plus optional context fields."""
    return json.dumps({"role": role, "content": content, **{k: v for k, v in extra.items() if v}}).encode()


def result_message(result: TaskResult, session_id: str) -> tuple[str, str, dict[str, Any]]:
    """The final answer to a request: (role, content, extra fields)."""
    extra: dict[str, Any] = {"task_id": result.task_id, "session_id": session_id, "state": str(result.state)}
    if result.state == TaskState.SUCCEEDED:
        return Role.ON_RESPONSE, result.output, extra
    if result.state == TaskState.CANCELLED:
        return Role.SYSTEM, KILL_FROM_AGENT, {**extra, "reason": result.error}
    return Role.REPORT, f"task failed: {result.error}", {**extra, "error": result.error}


def progress_message(ev: TaskEvent) -> tuple[str, str, dict[str, Any]] | None:
    """An intermediate event worth telling the service (None: not published)."""
    extra: dict[str, Any] = {"task_id": ev.task_id}
    if ev.kind == EventKind.STEP:
        return Role.PRE_COMMAND, json.dumps({"command_name": ev.text, "arguments": dict(ev.data)}), extra
    if ev.kind == EventKind.LOG:
        return Role.REPORT, ev.text, extra
    if ev.kind == EventKind.ARTIFACT and ev.artifact is not None:
        return Role.REPORT, f"artifact {ev.artifact.path} ({ev.artifact.size} bytes)", extra
    return None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_password(url: str) -> str:
    """The password in an AMQP URL (decoded and as written), to keep it out of logs."""
    try:
        raw = urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
    except ValueError:
        return ""
    return raw


def resolve_url(url: str | None, env: dict[str, str]) -> str:
    """--url, else RABBITMQ_URL, else the seed's RABBITMQ_HOST (a host name or a URL)."""
    if url:
        return url
    if env.get("RABBITMQ_URL"):
        return env["RABBITMQ_URL"]
    host = env.get("RABBITMQ_HOST", "").strip()
    if host:
        return host if "://" in host else f"amqp://guest:guest@{host}/"
    return "amqp://guest:guest@localhost/"
