"""The tools an agent offers its model: files of the workspace, the sandbox, the web.

Each tool is a `ToolSpec` (what the model sees) and an async handler that takes
the call's arguments and returns the text the model reads back. A refused or
failed call raises ToolError; `Toolbox.call` turns it into an ``error: ...``
result, so the model can correct itself.

    box = Toolbox(ToolEnv(workspace, sandbox, settings, ctx), ["read_file", "write_file"])
    specs = box.specs()                  # for LLM.chat(tools=...)
    text = await box.call("read_file", {"path": "app.py"})
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import telemetry
from .errors import ToolError
from .llm.types import ToolSpec
from .runtime import TaskContext
from .sandbox import Sandbox, SandboxResult
from .settings import AgentSettings
from .workspace import Workspace

log = structlog.get_logger("agentd.tools")

READ_LIMIT = 60_000  # characters of a file the model reads at once
WRITE_LIMIT = 2_000_000  # bytes of one write
LIST_LIMIT = 500  # files listed at once
FETCH_LIMIT = 200_000  # bytes of a fetched page
FETCH_TIMEOUT_S = 15.0

Handler = Callable[["ToolEnv", dict[str, Any]], Awaitable[str]]


@dataclass
class ToolEnv:
    """What the tools act on: one task's workspace and sandbox."""

    workspace: Workspace
    sandbox: Sandbox
    settings: AgentSettings | None = None
    ctx: TaskContext | None = None  # for events (isolation notes, artifacts)
    isolation_reported: bool = False
    runs: list[SandboxResult] = field(default_factory=list)

    @classmethod
    def for_context(cls, ctx: TaskContext) -> ToolEnv:
        ws = Workspace(ctx.workspace)
        return cls(ws, Sandbox.for_settings(ws.root, ctx.settings), ctx.settings, ctx)

    def report_isolation(self, result: SandboxResult) -> None:
        """Say once per task, as an event, what the sandbox could not isolate."""
        if self.isolation_reported or self.ctx is None:
            return
        missing = [n for n in result.notes if not n.startswith(("killed at", "file size", "CPU"))]
        if missing:
            self.isolation_reported = True
            self.ctx.log("sandbox isolation limited: " + "; ".join(missing))


@dataclass
class Tool:
    spec: ToolSpec
    handler: Handler
    # One line for the approval prompt, from the arguments.
    summarize: Callable[[dict[str, Any]], str] = lambda args: json.dumps(args)[:200]


def _str_arg(args: dict[str, Any], name: str, default: str | None = None) -> str:
    v = args.get(name, default)
    if v is None:
        raise ToolError(f"missing argument {name!r}")
    if not isinstance(v, str):
        raise ToolError(f"argument {name!r} must be a string")
    return v


# ---------------------------------------------------------------- files


async def read_file(env: ToolEnv, args: dict[str, Any]) -> str:
    path = _str_arg(args, "path")
    data = env.workspace.read_bytes(path, READ_LIMIT + 1)
    text = data[:READ_LIMIT].decode("utf-8", errors="replace")
    if len(data) > READ_LIMIT:
        text += f"\n[... file longer than {READ_LIMIT} bytes, cut ...]"
    return text


async def write_file(env: ToolEnv, args: dict[str, Any]) -> str:
    path = _str_arg(args, "path")
    content = _str_arg(args, "content")
    data = content.encode("utf-8")
    if len(data) > WRITE_LIMIT:
        raise ToolError(f"content too large ({len(data)} bytes, at most {WRITE_LIMIT})")
    full = env.workspace.write_bytes(path, data)
    return f"wrote {env.workspace.relative(full)} ({len(data)} bytes)"


async def list_files(env: ToolEnv, args: dict[str, Any]) -> str:
    under = _str_arg(args, "path", "")
    under = "" if under.strip() in ("", ".", "./") else under
    files = list(env.workspace.files(under))
    if not files:
        return "(no files)" if not under else f"(no files under {under})"
    shown = files[:LIST_LIMIT]
    lines = [f"{p}\t{env.workspace.resolve(p).stat().st_size}" for p in shown]
    if len(files) > LIST_LIMIT:
        lines.append(f"[... {len(files) - LIST_LIMIT} more files]")
    return "\n".join(lines)


# ---------------------------------------------------------------- sandbox


async def run_command(env: ToolEnv, args: dict[str, Any]) -> str:
    command = _str_arg(args, "command")
    timeout = args.get("timeout_s")
    limit = env.sandbox.limits.timeout_s
    t = limit
    if isinstance(timeout, int | float) and timeout > 0:
        t = min(float(timeout), limit)
    result = await env.sandbox.run(command, timeout_s=t)
    env.runs.append(result)
    env.report_isolation(result)
    log.info(
        "sandbox_run",
        command=command[:200],
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        duration_s=round(result.duration_s, 3),
    )
    text = result.describe()
    if result.notes:
        text += "\nnotes: " + "; ".join(result.notes)
    return text


# ---------------------------------------------------------------- web


async def fetch_url(env: ToolEnv, args: dict[str, Any]) -> str:
    url = _str_arg(args, "url").strip()
    if env.settings is not None and not getattr(env.settings, "allow_fetch", True):
        raise ToolError("fetching URLs is disabled on this agent (ORCHGPT_ALLOW_FETCH=false)")
    if not url.lower().startswith(("http://", "https://")):
        raise ToolError(f"only http and https URLs can be fetched, not {url!r}")
    import httpx

    try:
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True, max_redirects=5) as client,
            client.stream("GET", url, headers={"User-Agent": "orchgpt-agent/0.1"}) as resp,
        ):
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > FETCH_LIMIT:
                    break
            ctype = resp.headers.get("content-type", "")
            status = resp.status_code
    except httpx.HTTPError as exc:
        raise ToolError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from None
    cut = len(body) > FETCH_LIMIT
    text = bytes(body[:FETCH_LIMIT]).decode(resp.encoding or "utf-8", errors="replace")
    head = f"HTTP {status} {ctype}".strip()
    if cut:
        text += f"\n[... cut at {FETCH_LIMIT} bytes ...]"
    return f"{head}\n{text}"


# ---------------------------------------------------------------- registry

_PATH = {"type": "string", "description": "path relative to the workspace, e.g. 'app/main.py'"}

TOOLS: dict[str, Tool] = {
    "read_file": Tool(
        ToolSpec(
            "read_file",
            "Read a text file of the workspace.",
            {"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
        ),
        read_file,
        lambda a: f"read {a.get('path', '?')}",
    ),
    "write_file": Tool(
        ToolSpec(
            "write_file",
            "Create or replace a text file of the workspace with the given content (parent directories are created).",
            {
                "type": "object",
                "properties": {"path": _PATH, "content": {"type": "string", "description": "the whole file"}},
                "required": ["path", "content"],
            },
        ),
        write_file,
        lambda a: f"write {a.get('path', '?')} ({len(str(a.get('content', '')))} chars)",
    ),
    "list_files": Tool(
        ToolSpec(
            "list_files",
            "List the files of the workspace (or of a directory in it) with their sizes.",
            {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "directory; empty for all"}},
            },
        ),
        list_files,
        lambda a: f"list {a.get('path') or 'workspace'}",
    ),
    "run_command": Tool(
        ToolSpec(
            "run_command",
            "Run a shell command in the workspace, in a sandbox (no network, limited time and "
            "memory). Returns the exit code and the output. Use it to run tests, e.g. "
            "'python -m pytest -q'.",
            {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "a shell command line"},
                    "timeout_s": {"type": "number", "description": "seconds (capped by the agent)"},
                },
                "required": ["command"],
            },
        ),
        run_command,
        lambda a: f"run: {str(a.get('command', '?'))[:200]}",
    ),
    "fetch_url": Tool(
        ToolSpec(
            "fetch_url",
            "Fetch a web page or file over HTTP(S) and return its start as text.",
            {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        ),
        fetch_url,
        lambda a: f"fetch {a.get('url', '?')}",
    ),
}

FILE_TOOLS = ("read_file", "write_file", "list_files")
ALL_TOOLS = tuple(TOOLS)


def register_tool(tool: Tool) -> Tool:
    """Add a tool to the registry (an agent may offer its own)."""
    TOOLS[tool.spec.name] = tool
    return tool


class Toolbox:
    """The tools one agent offers in one task."""

    def __init__(self, env: ToolEnv, names: Iterable[str] = ALL_TOOLS) -> None:
        self.env = env
        self.tools: dict[str, Tool] = {}
        for name in names:
            if name not in TOOLS:
                raise KeyError(f"unknown tool {name!r}; known: {', '.join(sorted(TOOLS))}")
            if name == "fetch_url" and env.settings is not None and not getattr(env.settings, "allow_fetch", True):
                continue  # not even offered when disabled (a call still gets a clear refusal)
            self.tools[name] = TOOLS[name]

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self.tools.values()]

    def summary(self, name: str, args: dict[str, Any]) -> str:
        tool = self.tools.get(name)
        try:
            return tool.summarize(args) if tool else f"{name} (unknown tool)"
        except Exception:
            return name

    async def call(self, name: str, args: dict[str, Any]) -> tuple[str, bool]:
        """Run a tool call; (text for the model, ok). Refusals and failures are text too."""
        tool = self.tools.get(name) or (TOOLS.get(name) if name == "fetch_url" else None)
        if tool is None:
            return f"error: unknown tool {name!r}; available: {', '.join(self.tools)}", False
        if not isinstance(args, dict):
            return "error: the arguments must be a JSON object", False
        ok = False
        try:
            with telemetry.tool(name):
                out = await tool.handler(self.env, args)
            ok = True
            return out, True
        except ToolError as exc:
            return f"error: {exc}", False
        finally:
            telemetry.count_tool(ok)
