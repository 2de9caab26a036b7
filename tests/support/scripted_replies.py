"""What a ScriptedOpenAI answers and what it is asked: Response and its builders (text, tool_call,
error...), the request helpers (last_text, prompt_text...), and route for answering by the
prompt."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(s: str) -> int:
    """The scripted tokenizer: one token per word or punctuation mark."""
    return len(_TOKEN.findall(s))


@dataclass
class Response:
    """One scripted answer to a chat completion request."""

    content: str = ""
    # Each {"name": str, "arguments": dict | str, "id": optional str}
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    error: str = ""  # the error message when status >= 400
    error_type: str = ""
    error_param: str | None = None  # the "param" of the error body, e.g. "max_tokens" (OpenAI, vLLM)
    error_code: str | None = None  # the "code" of the error body, e.g. "unsupported_parameter"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "0"}
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    usage: dict[str, int] | None = None  # default: counted with `count_tokens`
    report_usage: bool = True  # False: no usage at all (the client must count itself)
    delay_s: float = 0.0  # wait before answering (timeouts); cut short when the server closes
    chunk_delay_s: float = 0.0  # wait between streamed chunks
    chunk_chars: int = 0  # stream in pieces of this many characters (0: word by word)
    disconnect: bool = False  # close the connection without answering

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Response:
        return cls(**d)


def text(content: str, **kw: Any) -> Response:
    """A plain assistant answer."""
    return Response(content=content, **kw)


def tool_call(
    name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None, content: str = "", **kw: Any
) -> Response:
    """A native tool call (``arguments`` as a dict, or a raw string to send malformed JSON)."""
    call: dict[str, Any] = {"name": name, "arguments": {} if arguments is None else arguments}
    if id:
        call["id"] = id
    return Response(content=content, tool_calls=[call], **kw)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], content: str = "", **kw: Any) -> Response:
    """Several native tool calls in one answer: ``tool_calls(("a", {...}), ("b", {...}))``."""
    return Response(content=content, tool_calls=[{"name": n, "arguments": a} for n, a in calls], **kw)


def compat_call(name: str, arguments: dict[str, Any] | None = None, *, before: str = "", **kw: Any) -> Response:
    """A compatibility-mode call: text with a fenced ```json {"tool": ..., "arguments": ...} block."""
    block = json.dumps({"tool": name, "arguments": arguments or {}})
    prefix = before + "\n\n" if before else ""
    return Response(content=f"{prefix}```json\n{block}\n```", **kw)


def error(status: int, message: str, **kw: Any) -> Response:
    """An HTTP error with an OpenAI-style body: {"error": {"message": ...}}."""
    return Response(status=status, error=message, **kw)


def hang(seconds: float) -> Response:
    """An answer that only starts after ``seconds`` (for timeouts)."""
    return Response(content="too late", delay_s=seconds)


def disconnect() -> Response:
    """Close the connection without answering (a crashed server)."""
    return Response(disconnect=True)


def _content(m: dict[str, Any]) -> str:
    c = m.get("content")
    if isinstance(c, list):
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return c or ""


def last_text(req: dict[str, Any]) -> str:
    """Text of the last message of a chat request, whatever its role."""
    msgs = req.get("messages") or []
    return _content(msgs[-1]) if msgs else ""


def system_text(req: dict[str, Any]) -> str:
    return "\n".join(_content(m) for m in req.get("messages") or [] if m.get("role") == "system")


def prompt_text(req: dict[str, Any]) -> str:
    """All message texts of a chat request, joined."""
    return "\n".join(_content(m) for m in req.get("messages") or [])


def has_tool_result(req: dict[str, Any]) -> bool:
    msgs = req.get("messages") or []
    return bool(msgs) and msgs[-1].get("role") == "tool"


Matcher = str | Callable[[dict[str, Any]], bool]


Reply = Response | str | Sequence[Response] | Callable[[dict[str, Any]], "Response | str"]


def route(*rules: tuple[Matcher, Reply], default: Reply | None = None) -> Callable[[dict[str, Any]], Response]:
    """A responder from (matcher, reply) rules; see the module doc."""
    used: dict[int, int] = {}
    lock = threading.Lock()

    def pick(i: int, reply: Reply, req: dict[str, Any]) -> Response:
        if isinstance(reply, (Response, str)):
            return _as_response(reply)
        if callable(reply):
            return _as_response(reply(req))
        seq = list(reply)
        with lock:
            n = used.get(i, 0)
            used[i] = n + 1
        return seq[min(n, len(seq) - 1)]

    def responder(req: dict[str, Any]) -> Response:
        for i, (match, reply) in enumerate(rules):
            ok = match in last_text(req) if isinstance(match, str) else bool(match(req))
            if ok:
                return pick(i, reply, req)
        if default is None:
            return error(500, f"scripted server: no rule matches the last message {last_text(req)[:200]!r}")
        return pick(-1, default, req)

    return responder


def _as_response(r: Response | str) -> Response:
    return r if isinstance(r, Response) else Response(content=r)
