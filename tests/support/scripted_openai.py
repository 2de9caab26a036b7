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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.scripted_openai_http import Recorded, _Handler
from tests.support.scripted_replies import (
    Response,
    _as_response,
    compat_call,
    count_tokens,
    disconnect,
    error,
    hang,
    has_tool_result,
    last_text,
    prompt_text,
    route,
    system_text,
    text,
    tool_call,
    tool_calls,
)

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
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-openai", daemon=True
            )
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
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": api_key or self.api_key or "sk-scripted",
            "ORCHGPT_MODEL": self.models[0] if self.models else "scripted-model",
        }

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
    srv = ScriptedOpenAI(
        items,
        responder=responder,
        reject_tools=args.reject_tools,
        reject_system=args.reject_system,
        api_key=args.api_key,
        port=args.port,
    )
    with srv:
        print(f"scripted OpenAI server on {srv.base_url} ({len(items)} scripted responses); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
