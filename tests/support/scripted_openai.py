"""A scripted OpenAI-compatible HTTP server for tests: real HTTP on 127.0.0.1, port 0.

It speaks ``POST /v1/chat/completions`` (JSON, and SSE when ``stream: true``,
tool calls streamed as deltas, a usage chunk when
``stream_options.include_usage``), ``GET /v1/models`` and llama.cpp's
``POST /tokenize`` ({"content": "..."} -> {"tokens": [...]}, one token per
word or punctuation mark, see `count_tokens`). Every request is recorded.

What it answers comes from a script (a list of `Response`, consumed in
order, one per chat request) or from a responder ``(request_json) -> Response``
that looks at the prompt. Build responses with the helpers::

    from tests.support.scripted_openai import ScriptedOpenAI, text, tool_call, compat_call, error

    with ScriptedOpenAI([
        error(429, "slow down"),                      # retried by the client
        tool_call("write_file", {"path": "app.py", "content": "print(1)"}),  # native tool call
        compat_call("run", {"cmd": "pytest"}),        # a fenced ```json {"tool": ...} block as text
        text("All done."),                            # streamed word by word
    ]) as srv:
        settings = AgentSettings.for_endpoint(srv.base_url)   # http://127.0.0.1:PORT/v1
        ...
        assert srv.chat_requests[-1]["messages"][-1]["role"] == "tool"

Driving an agent by its prompt (first matching rule wins; a string matches
the text of the *last* message of the request, whatever its role; a list of
responses is used in turn, its last one repeated)::

    srv = ScriptedOpenAI(responder=route(
        ("Result of tool write_file", text("Written.")),      # compat mode: results come as user text
        (lambda req: has_tool_result(req), text("Done.")),    # native mode: a "tool" message
        ("architecture", [compat_call("write_file", {...}), text("Done.")]),
        default=text("I do not know."),
    ))

Server behaviour switches: ``reject_tools=True`` answers 400 to any request
with ``tools`` (like llama.cpp without --jinja), ``reject_system=True``
answers 400 "System role not supported" to a request with a system message
(Mistral templates), ``api_key="k"`` answers 401 to a wrong bearer token,
``tokenize=False`` answers 404 on /tokenize. Rejected requests do not consume
the script. A request with nothing left in the script gets a 500 saying so.

As a pytest fixture: ``from tests.support.scripted_openai import scripted_openai``
in a test module, then ``def test_x(scripted_openai): scripted_openai.push(text("hi"))``.

For manual runs: ``python -m tests.support.scripted_openai --port 8099 --script replies.json``
(a JSON list of `Response` fields, e.g. ``[{"content": "hi"}, {"status": 500, "error": "boom"}]``).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Recorded",
    "Response",
    "ScriptedOpenAI",
    "compat_call",
    "count_tokens",
    "disconnect",
    "error",
    "hang",
    "has_tool_result",
    "last_text",
    "prompt_text",
    "route",
    "scripted_openai",
    "system_text",
    "text",
    "tool_call",
    "tool_calls",
]

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


# ---------------------------------------------------------------------- response helpers
def text(content: str, **kw: Any) -> Response:
    """A plain assistant answer."""
    return Response(content=content, **kw)


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None,
              content: str = "", **kw: Any) -> Response:
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


# ---------------------------------------------------------------------- request helpers
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


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None


# ---------------------------------------------------------------------- the server
class ScriptedOpenAI:
    def __init__(
        self,
        script: Sequence[Response | str | Callable[[dict[str, Any]], Response | str]] = (),
        *,
        responder: Callable[[dict[str, Any]], Response | str] | None = None,
        reject_tools: bool = False,
        reject_system: bool = False,
        api_key: str | None = None,
        models: Sequence[str] = ("scripted-model",),
        tokenize: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script: list[Response | str | Callable[[dict[str, Any]], Response | str]] = list(script)
        self.responder = responder
        self.reject_tools = reject_tools
        self.reject_system = reject_system
        self.api_key = api_key
        self.models = list(models)
        self.tokenize = tokenize
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> ScriptedOpenAI:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="scripted-openai", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- addresses
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be: ``http://127.0.0.1:PORT/v1``."""
        return self.root_url + "/v1"

    def env(self, api_key: str | None = None) -> dict[str, str]:
        """Environment that points agentd at this server."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": api_key or self.api_key or "sk-scripted",
                "ORCHGPT_MODEL": self.models[0] if self.models else "scripted-model"}

    # ---- script
    def push(self, *responses: Response | str | Callable[[dict[str, Any]], Response | str]) -> None:
        with self._lock:
            self.script.extend(responses)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self.script)

    # ---- what was received
    def recorded(self, path_suffix: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of every chat completion request, rejected ones included, in order."""
        return [r.body for r in self.recorded("/chat/completions")]

    @property
    def tokenize_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.recorded("/tokenize")]

    def _next(self, req: dict[str, Any], n: int) -> Response:
        if self.responder is not None:
            return _as_response(self.responder(req))
        with self._lock:
            item = self.script.pop(0) if self.script else None
        if item is None:
            return error(500, f"scripted server: the script has no response left for chat request #{n}")
        if callable(item):
            return _as_response(item(req))
        return _as_response(item)


def _handler_for(server: ScriptedOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        srv = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    srv: ScriptedOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---- plumbing
    def _record(self, body: Any) -> int:
        rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with self.srv._lock:
            self.srv.requests.append(rec)
            return sum(1 for r in self.srv.requests if r.path.endswith("/chat/completions"))

    def _read_json(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return {"_raw": raw.decode("utf-8", "replace")}

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, etype: str = "", code: str | None = None,
               headers: dict[str, str] | None = None, param: str | None = None) -> None:
        default_type = {401: "invalid_request_error", 429: "rate_limit_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error")
        self._json(status, {"error": {"message": message, "type": etype or default_type, "param": param,
                                      "code": code}}, headers)

    def _authorised(self) -> bool:
        if self.srv.api_key is None:
            return True
        if self.headers.get("Authorization", "") == f"Bearer {self.srv.api_key}":
            return True
        self._error(401, "Incorrect API key provided", code="invalid_api_key")
        return False

    # ---- routes
    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            if self._authorised():
                self._json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.srv.models]})
        elif self.path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        body = self._read_json()
        n = self._record(body)
        path = self.path.rstrip("/")
        if path == "/tokenize":
            if not self.srv.tokenize:
                self._error(404, "File Not Found")
            elif self._authorised():
                content = (body or {}).get("content", "")
                toks = [zlib.crc32(t.encode()) % 32000 for t in _TOKEN.findall(content)]
                self._json(200, {"tokens": toks})
        elif path in ("/v1/chat/completions", "/chat/completions"):
            if self._authorised():
                self._chat(body if isinstance(body, dict) else {}, n)
        else:
            self._error(404, f"no route {self.path}")

    def _chat(self, req: dict[str, Any], n: int) -> None:
        msgs = req.get("messages") or []
        if self.srv.reject_system and any(m.get("role") == "system" for m in msgs):
            self._error(400, "System role not supported")
            return
        if self.srv.reject_tools and req.get("tools"):
            self._error(400, "tools are not supported by this server (tools param requires --jinja flag)")
            return
        if not msgs:
            self._error(400, "'messages' is required")
            return
        r = self.srv._next(req, n)
        if r.disconnect:
            self.close_connection = True
            return
        if r.delay_s and self.srv._stop.wait(r.delay_s):
            self.close_connection = True
            return
        if r.status >= 400:
            self._error(r.status, r.error or f"scripted error {r.status}", r.error_type, code=r.error_code,
                        headers=r.headers, param=r.error_param)
            return
        calls = [
            {
                "id": c.get("id") or "call_" + uuid.uuid4().hex[:12],
                "type": "function",
                "function": {
                    "name": c["name"],
                    "arguments": c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"]),
                },
            }
            for c in r.tool_calls
        ]
        finish = r.finish_reason or ("tool_calls" if calls else "stop")
        usage = r.usage or {
            "prompt_tokens": sum(4 + count_tokens(_content(m)) for m in msgs),
            "completion_tokens": count_tokens(r.content) + sum(
                count_tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls),
        }
        usage = {**usage, "total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)}
        model = req.get("model") or (self.srv.models[0] if self.srv.models else "scripted-model")
        cid = "chatcmpl-" + uuid.uuid4().hex[:16]
        if req.get("stream"):
            want_usage = bool((req.get("stream_options") or {}).get("include_usage")) and r.report_usage
            self._sse(cid, model, r, calls, finish, usage if want_usage else None)
            return
        message: dict[str, Any] = {"role": "assistant", "content": r.content if (r.content or not calls) else None}
        if calls:
            message["tool_calls"] = calls
        out: dict[str, Any] = {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                               "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
        if r.report_usage:
            out["usage"] = usage
        self._json(200, out, r.headers)

    def _sse(self, cid: str, model: str, r: Response, calls: list[dict[str, Any]], finish: str,
             usage: dict[str, int] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for k, v in r.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        def send(obj: Any) -> bool:
            if r.chunk_delay_s and self.srv._stop.wait(r.chunk_delay_s):
                return False
            data = obj if isinstance(obj, str) else json.dumps(obj)
            try:
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
            except OSError:  # the client went away
                return False
            return True

        events: list[Any] = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in _pieces(r.content, r.chunk_chars)]
        for i, c in enumerate(calls):
            fn = c["function"]
            events.append(chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                                  "function": {"name": fn["name"], "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                       for piece in _pieces(fn["arguments"], max(r.chunk_chars, 8))]
        events.append(chunk({}, finish))
        if usage is not None:
            events.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": usage})
        events.append("[DONE]")
        for ev in events:
            if not send(ev):
                return


def _pieces(s: str, size: int) -> Iterator[str]:
    if not s:
        return
    if size > 0:
        for i in range(0, len(s), size):
            yield s[i:i + size]
    else:
        yield from re.findall(r"\S+\s*|\s+", s)


# ---------------------------------------------------------------------- pytest fixture
try:
    import pytest

    @pytest.fixture
    def scripted_openai() -> Iterator[ScriptedOpenAI]:
        """A started ScriptedOpenAI with an empty script; ``push`` responses onto it."""
        with ScriptedOpenAI() as srv:
            yield srv
except ImportError:  # pragma: no cover - pytest is a dev dependency
    pass


# ---------------------------------------------------------------------- manual runs
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.support.scripted_openai", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--script", help="JSON file: a list of Response objects ({'content': ...}, {'status': 429, ...})")
    ap.add_argument("--loop", action="store_true", help="start the script again when it runs out")
    ap.add_argument("--reject-tools", action="store_true")
    ap.add_argument("--reject-system", action="store_true")
    ap.add_argument("--api-key")
    args = ap.parse_args(argv)
    items: list[Response] = []
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            items = [Response.from_dict(d) if isinstance(d, dict) else Response(content=str(d)) for d in json.load(f)]
    responder = None
    if args.loop and items:
        counter = iter(range(1 << 62))
        responder = lambda _req: items[next(counter) % len(items)]  # noqa: E731
    srv = ScriptedOpenAI(items, responder=responder, reject_tools=args.reject_tools,
                         reject_system=args.reject_system, api_key=args.api_key, port=args.port)
    with srv:
        print(f"scripted OpenAI server on {srv.base_url} ({len(items)} scripted responses); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
