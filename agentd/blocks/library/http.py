"""An HTTP request: off unless the blocks agent is allowed (ORCHGPT_BLOCKS_ALLOW_HTTP=true),
as the agents' fetch tool is gated by ORCHGPT_ALLOW_FETCH."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..base import Block, BlockContext, BlockOutput

HTTP_LIMIT = 1_000_000  # bytes of a response kept
HTTP_TIMEOUT_S = 30.0


class HttpRequest(Block):
    id = "http.request"
    name = "HTTP request"
    description = (
        "sends an HTTP(S) request; 'status', 'body' (text) and 'data' (the body "
        "parsed, when it is JSON). Disabled unless the blocks agent runs with "
        "ORCHGPT_BLOCKS_ALLOW_HTTP=true"
    )
    categories = ("web",)

    class Input(BaseModel):
        url: str
        method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
        headers: dict[str, str] = Field(default_factory=dict)
        body: Any = Field(default=None, description="a string is sent as is, anything else as JSON")

    class Output(BaseModel):
        status: int
        body: str
        data: Any = Field(description="the body parsed as JSON, when it is JSON")

    test_input = {"url": "https://example.org/api", "method": "POST", "body": {"q": 1}}
    test_output = [("status", 200), ("body", '{"echo": {"q": 1}}'), ("data", {"echo": {"q": 1}})]

    @staticmethod
    def _fake_send(method: str, url: str, headers: dict[str, str], content: bytes | None) -> tuple[int, bytes]:
        return 200, json.dumps({"echo": json.loads(content or b"null")}).encode()

    test_mock = {"send": _fake_send}

    async def send(self, method: str, url: str, headers: dict[str, str], content: bytes | None) -> tuple[int, bytes]:
        import httpx

        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=True, max_redirects=5) as client,
            client.stream(
                method,
                url,
                headers={"User-Agent": "orchgpt-blocks/0.1", **headers},
                content=content,
            ) as resp,
        ):
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > HTTP_LIMIT:
                    break
            return resp.status_code, bytes(body[:HTTP_LIMIT])

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        mocked = "send" in vars(self)
        if not ctx.allow_http and not mocked:
            yield (
                "error",
                ("HTTP requests are disabled on this blocks agent (set ORCHGPT_BLOCKS_ALLOW_HTTP=true to allow them)"),
            )
            return
        if not input.url.lower().startswith(("http://", "https://")):
            yield "error", f"only http and https URLs can be requested, not {input.url!r}"
            return
        content = (
            None
            if input.body is None
            else (input.body.encode() if isinstance(input.body, str) else json.dumps(input.body).encode())
        )
        try:
            result = self.send(input.method, input.url, input.headers, content)
            status, raw = await result if not isinstance(result, tuple) else result
        except Exception as exc:  # httpx errors and bad URLs alike: the node fails, named
            yield "error", f"{input.method} {input.url} failed: {type(exc).__name__}: {exc}"
            return
        text = raw.decode("utf-8", errors="replace")
        yield "status", status
        yield "body", text
        try:
            yield "data", json.loads(text)
        except ValueError:
            pass
