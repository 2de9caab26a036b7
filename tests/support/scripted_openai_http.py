"""ScriptedOpenAI's HTTP side: the request handler (chat completions as JSON or SSE, models,
tokenize) and the record of each request."""

from __future__ import annotations

import json
import re
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from tests.support.scripted_replies import _TOKEN, Response, _content, count_tokens

if TYPE_CHECKING:
    from tests.support.scripted_openai import ScriptedOpenAI


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None


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

    def _error(
        self,
        status: int,
        message: str,
        etype: str = "",
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        default_type = {401: "invalid_request_error", 429: "rate_limit_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self._json(
            status,
            {"error": {"message": message, "type": etype or default_type, "param": param, "code": code}},
            headers,
        )

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
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.srv.models
                        ],
                    },
                )
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
            self._error(
                r.status,
                r.error or f"scripted error {r.status}",
                r.error_type,
                code=r.error_code,
                headers=r.headers,
                param=r.error_param,
            )
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
            "completion_tokens": count_tokens(r.content)
            + sum(count_tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls),
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
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if r.report_usage:
            out["usage"] = usage
        self._json(200, out, r.headers)

    def _sse(
        self, cid: str, model: str, r: Response, calls: list[dict[str, Any]], finish: str, usage: dict[str, int] | None
    ) -> None:
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
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

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
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": c["id"],
                                "type": "function",
                                "function": {"name": fn["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            events += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                for piece in _pieces(fn["arguments"], max(r.chunk_chars, 8))
            ]
        events.append(chunk({}, finish))
        if usage is not None:
            events.append(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        events.append("[DONE]")
        for ev in events:
            if not send(ev):
                return


def _pieces(s: str, size: int) -> Iterator[str]:
    if not s:
        return
    if size > 0:
        for i in range(0, len(s), size):
            yield s[i : i + size]
    else:
        yield from re.findall(r"\S+\s*|\s+", s)
