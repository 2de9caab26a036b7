"""The tools of MCP servers (the official `mcp` SDK) as tools of a declared agent.

For one task, `open_servers` connects to each server the definition lists (``[mcp.NAME]``):

* stdio (``command``): the agent starts the command with the sandbox's clean environment (none
  of the agent's variables: no model key, no certificate path) plus the server's ``env``, the
  task's workspace as its directory, and the sandbox's memory, file-size and core limits (set
  by the sandbox launcher, agentd/sandbox/launcher.py, before it execs the command). It is not
  put in the sandbox's namespaces: an MCP server is a program the definition names, trusted
  like a tool of the agent, and most need what the namespaces take away (the network, their
  own installation). ``python`` as the command is the agent's own interpreter (with its
  PYTHONPATH). The server
  stops with the task.
* streamable HTTP (``url``): the agent connects to the URL (``bearer_env``: the name of a
  variable of the agent's environment holding a bearer token).

Each tool of a server is offered to the model as ``NAME__TOOL`` with the server's description
and JSON schema (``tools`` in the definition: only those). A call goes through the task loop like
any built-in tool: the approval flow, then a STEP event with its arguments and a short result.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import structlog

from orchgpt.agent_defs import McpServer

from .errors import TaskFailed, ToolError
from .llm.types import ToolSpec
from .tools import Tool, ToolEnv

log = structlog.get_logger("agentd.mcp")

RESULT_LIMIT = 60_000  # characters of a tool's result the model reads
SEP = "__"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _stdio_params(server: McpServer, env: ToolEnv) -> Any:
    from mcp import StdioServerParameters

    from .sandbox.core import _launcher_env, clean_env
    from .sandbox.launcher import LaunchSpec

    workspace = Path(env.workspace.root)
    own_python = server.command in ("python", "python3")
    command = sys.executable if own_python else server.command
    extra = {k: _expand(v) for k, v in server.env.items()}
    if own_python and os.environ.get("PYTHONPATH") and "PYTHONPATH" not in extra:
        extra["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the agent's own import path, as its interpreter
    lim = env.sandbox.limits
    rlimits = {"FSIZE": lim.file_size_mb * 1024 * 1024, "CORE": 0}
    if lim.memory_mb > 0:
        rlimits["AS"] = lim.memory_mb * 1024 * 1024
    try:
        child_env = clean_env(workspace, extra, str(workspace / ".tmp"))
    except ToolError as exc:
        raise TaskFailed(f"mcp server: {exc}") from None
    (workspace / ".tmp").mkdir(exist_ok=True)
    spec = LaunchSpec(argv=[command, *server.args], env=child_env, cwd=str(workspace), rlimits=rlimits)
    from .sandbox.core import LAUNCHER

    return StdioServerParameters(
        command=sys.executable,
        args=["-I", "-S", str(LAUNCHER), spec.to_json()],
        env=_launcher_env(),
        cwd=str(workspace),
    )


async def _http_transport(stack: contextlib.AsyncExitStack, server: McpServer) -> Any:
    """The streamable-HTTP transport, with ``Authorization: Bearer $bearer_env`` when set (the
    token is read from the agent's environment, never from the definition, and never logged)."""
    if not server.bearer_env:
        return server.url
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    token = os.environ.get(server.bearer_env, "")
    if not token:
        raise TaskFailed(f"mcp server {server.url}: {server.bearer_env} is not set in the agent's environment")
    http = await stack.enter_async_context(create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))
    return streamable_http_client(server.url, http_client=http)


def _expand(value: str) -> str:
    """``${NAME}``: the value of NAME in the agent's environment (a secret stays on the agent's
    host instead of travelling in the definition); anything else is taken as it is."""
    m = _VAR.fullmatch(value)
    if m is None:
        return value
    if m.group(1) not in os.environ:
        raise TaskFailed(f"mcp server env: {m.group(1)} is not set in the agent's environment")
    return os.environ[m.group(1)]


def _text(result: Any) -> str:
    """A CallToolResult as text for the model (text parts; other parts named)."""
    parts = []
    for c in result.content:
        if getattr(c, "type", "") == "text":
            parts.append(c.text)
        else:
            parts.append(f"[{getattr(c, 'type', 'content')} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    return text if len(text) <= RESULT_LIMIT else text[:RESULT_LIMIT] + "\n[... cut ...]"


def _tool(server_name: str, server: McpServer, client: Any, t: Any) -> Tool:
    full = f"{server_name}{SEP}{t.name}"

    async def call(env: ToolEnv, args: dict[str, Any]) -> str:
        try:
            res = await client.call_tool(t.name, args, read_timeout_seconds=server.timeout)
        except Exception as exc:  # the server's failure is the model's to read, not the task's end
            raise ToolError(f"the MCP server {server_name} failed: {type(exc).__name__}: {exc}") from None
        text = _text(res)
        if res.is_error:
            raise ToolError(text or "the tool failed")
        return text

    schema = t.input_schema if isinstance(t.input_schema, dict) else {"type": "object", "properties": {}}
    desc = (t.description or t.title or t.name).strip()
    return Tool(
        ToolSpec(full, f"[{server_name}] {desc}"[:1000], schema),
        call,
        lambda a: f"{server_name}.{t.name} {json.dumps(a, ensure_ascii=False)[:300]}",
    )


async def open_servers(
    stack: contextlib.AsyncExitStack, servers: dict[str, McpServer], env: ToolEnv
) -> dict[str, Tool]:
    """Connect to every server (closed with ``stack``) and return their tools by name.
    A server that cannot be reached fails the task, naming it."""
    from mcp import Client

    tools: dict[str, Tool] = {}
    for name, server in servers.items():
        target = await _http_transport(stack, server) if server.url else _stdio_params(server, env)
        where = server.url or " ".join([server.command, *server.args])
        try:
            client = await stack.enter_async_context(Client(target, read_timeout_seconds=server.timeout, mode="legacy"))
            listed = await client.list_tools()
        except Exception as exc:
            while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # anyio's task groups
                exc = exc.exceptions[0]  # type: ignore[assignment]
            raise TaskFailed(f"the MCP server {name} ({where}) cannot be used: {type(exc).__name__}: {exc}") from None
        offered = [t for t in listed.tools if server.tools is None or t.name in server.tools]
        missing = sorted(set(server.tools or ()) - {t.name for t in listed.tools})
        if missing:
            raise TaskFailed(
                f"the MCP server {name} has no tool {', '.join(missing)} "
                f"(it offers {', '.join(t.name for t in listed.tools) or 'none'})"
            )
        for t in offered:
            tool = _tool(name, server, client, t)
            tools[tool.spec.name] = tool
        log.info("mcp_server_ready", server=name, where=where[:200], tools=len(offered))
    return tools
