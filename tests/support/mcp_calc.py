"""A small MCP server for tests, written with the official SDK's MCPServer (mcp 1's FastMCP).

    python tests/support/mcp_calc.py                  # over stdio
    python tests/support/mcp_calc.py --http PORTFILE  # streamable HTTP on 127.0.0.1, port 0;
                                                      # the port is written to PORTFILE
Tools: add(a, b) and shout(text). Over HTTP with MCP_CALC_TOKEN set, a request without that
bearer token gets 401. Each call is appended to $MCP_CALC_RECORD when set.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")


def _record(line: str) -> None:
    path = os.environ.get("MCP_CALC_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _record(f"add {a} {b} cwd={os.getcwd()}")
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    _record(f"shout {text}")
    return text.upper()


async def _http(port_file: str) -> None:
    import uvicorn

    app = server.streamable_http_app()
    token = os.environ.get("MCP_CALC_TOKEN", "")

    async def guarded(scope, receive, send):  # type: ignore[no-untyped-def]
        """With MCP_CALC_TOKEN set: 401 unless the request carries it as a bearer token."""
        if scope["type"] == "http" and token:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if auth != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await app(scope, receive, send)

    config = uvicorn.Config(guarded, host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    await task


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        asyncio.run(_http(sys.argv[2]))
    else:
        server.run("stdio")
