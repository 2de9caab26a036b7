"""A declared agent whose model calls the tools of MCP servers (issue 13): one started over
stdio by the agent, one over streamable HTTP started by the test, both written with the official
SDK's MCPServer (mcp 1's FastMCP). Calls go through the approval flow and are STEP events with
their arguments and a short result."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchgpt.models import (
    Action,
    ApprovalDecision,
    ApprovalResponse,
    Command,
    EventKind,
    TaskEvent,
    TaskState,
)
from tests.support.mesh import Daemon, wait_for
from tests.support.scripted_openai import ScriptedOpenAI, text, tool_call

pytestmark = pytest.mark.timeout(90)

SERVER = Path(__file__).resolve().parent / "support" / "mcp_calc.py"
TOKEN = "t0k-for-the-web-server"  # the HTTP server's bearer token, in the agents' environment only


@pytest.fixture
def http_server(tmp_path: Path) -> Any:
    port_file = tmp_path / "mcp-port"
    env = {
        **os.environ,
        "MCP_CALC_RECORD": str(tmp_path / "http-calls.txt"),
        "MCP_CALC_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: port_file.exists() or proc.poll() is not None, 20, what="the MCP HTTP server")
        assert proc.poll() is None, "the MCP HTTP server exited"
        yield f"http://127.0.0.1:{port_file.read_text()}/mcp"
    finally:
        proc.kill()
        proc.wait(5)


def definition(record: Path, url: str, approval: str = "never") -> str:
    return f"""name = "calc"
description = "Computes with MCP tools"
system_prompt = "You compute with the tools."
approval = "{approval}"
max_steps = 5

[mcp.calc]
command = "python"
args = ["{SERVER}"]
env = {{ MCP_CALC_RECORD = "{record}" }}

[mcp.web]
url = "{url}"
bearer_env = "CALC_TOKEN"
tools = ["shout"]
"""


def start(daemon_factory: Any, tmp_path: Path, model: ScriptedOpenAI, body: str) -> Daemon:
    adir = tmp_path / "agents.d"
    adir.mkdir()
    (adir / "calc.toml").write_text(body)
    return daemon_factory("--agents-dir", str(adir), env={**model.env(), "CALC_TOKEN": TOKEN}).start()  # type: ignore[no-any-return]


async def test_the_model_calls_mcp_tools_over_stdio_and_http(daemon_factory, tmp_path, http_server) -> None:  # type: ignore[no-untyped-def]
    record = tmp_path / "calls.txt"
    with ScriptedOpenAI(
        [
            tool_call("calc__add", {"a": 2, "b": 3}),
            tool_call("web__shout", {"text": "hi"}),
            text("2 + 3 = 5, and HI"),
        ],
        models=("m",),
    ) as model:
        d = start(daemon_factory, tmp_path, model, definition(record, http_server))
        async with d.client() as c:
            events = [e async for e in c.submit(Command("calc", Action.RUN, "add 2 and 3, shout hi"))]
        result = events[-1].result
        assert result is not None and result.state == TaskState.SUCCEEDED, result
        assert result.output == "2 + 3 = 5, and HI"
        tools = {t["function"]["name"]: t["function"] for t in model.chat_requests[0]["tools"]}
        assert set(tools) == {
            "calc__add",
            "calc__shout",
            "web__shout",
        }  # web: only the tools listed
        assert set(tools["calc__add"]["parameters"]["properties"]) == {
            "a",
            "b",
        }  # the server's schema
        assert "Add two integers" in tools["calc__add"]["description"]
        # the tool results went back to the model
        assert any(m.get("role") == "tool" and m.get("content") == "5" for m in model.chat_requests[1]["messages"])
    steps = [e for e in events if e.kind == EventKind.STEP and e.data.get("tool")]
    assert [(s.data["tool"], s.data["ok"], s.data["result"]) for s in steps] == [
        ("calc__add", "true", "5"),
        ("web__shout", "true", "HI"),
    ]
    assert '"a": 2' in steps[0].data["arguments"] and "calc.add" in steps[0].text
    # the stdio server ran with the task's workspace as its directory, and its own env
    line = record.read_text().splitlines()[0]
    assert line.startswith("add 2 3 cwd=") and line.endswith(result.task_id)
    assert (tmp_path / "http-calls.txt").read_text() == "shout hi\n"


async def test_mcp_calls_go_through_the_approval_flow(daemon_factory, tmp_path, http_server) -> None:  # type: ignore[no-untyped-def]
    body = definition(tmp_path / "unused.txt", http_server, approval="tools")
    body = body[: body.index("[mcp.calc]")] + body[body.index("[mcp.web]") :]  # HTTP only: quick
    script = [
        tool_call("web__shout", {"text": "yes"}),
        tool_call("web__shout", {"text": "no"}),
        text("done"),
    ]
    with ScriptedOpenAI(script, models=("m",)) as model:
        d = start(daemon_factory, tmp_path, model, body)
        events: list[TaskEvent] = []
        async with d.client() as c:
            async for ev in c.submit(Command("calc", Action.RUN, "go")):  # no --approve: the file asks
                events.append(ev)
                if ev.kind == EventKind.APPROVAL and ev.approval is not None:
                    ok = '"yes"' in ev.approval.arguments_json
                    decision = ApprovalDecision.APPROVE if ok else ApprovalDecision.REJECT
                    answer = ApprovalResponse(ev.approval.request_id, decision)
                    await asyncio.wait_for(c.approve(ev.task_id, answer), 10)
    asked = [e.approval.tool for e in events if e.kind == EventKind.APPROVAL and e.approval]
    assert asked == ["web__shout", "web__shout"]
    steps = [e.data for e in events if e.kind == EventKind.STEP and e.data.get("tool")]
    assert [(s["ok"], s.get("approved", "")) for s in steps] == [("true", ""), ("false", "false")]
    # approved: it ran; rejected: it never reached the server
    assert (tmp_path / "http-calls.txt").read_text() == "shout yes\n"
    assert events[-1].result is not None and events[-1].result.state == TaskState.SUCCEEDED


async def test_the_librarian_examples_filesystem_server_sees_the_workspace_only(
    tmp_path: Path,
) -> None:
    import contextlib

    from agentd.mcp_tools import open_servers
    from agentd.sandbox import Sandbox
    from agentd.tools import ToolEnv
    from agentd.workspace import Workspace
    from orchgpt.agent_defs import load_dir

    ws = tmp_path / "ws"
    (ws / "docs").mkdir(parents=True)
    (ws / "docs" / "a.md").write_text("alpha\nthe needle is here\n")
    (tmp_path / "secret.txt").write_text("outside")
    d = load_dir(Path(__file__).resolve().parent.parent / "examples" / "agents")["librarian"]
    env = ToolEnv(Workspace(ws), Sandbox(ws))
    async with contextlib.AsyncExitStack() as stack:
        tools = await open_servers(stack, d.mcp, env)  # same task: anyio scopes
        assert set(tools) == {"files__list_files", "files__read_file", "files__search"}
        assert await tools["files__search"].handler(env, {"pattern": "needle"}) == "docs/a.md:2: the needle is here"
        assert "alpha" in await tools["files__read_file"].handler(env, {"path": "docs/a.md"})
        from agentd.errors import ToolError

        with pytest.raises(ToolError, match="outside the directory"):
            await tools["files__read_file"].handler(env, {"path": "../secret.txt"})


def test_mcp_env_values_can_come_from_the_agents_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentd.errors import TaskFailed
    from agentd.mcp_tools import _expand

    monkeypatch.setenv("CALC_TOKEN", "s3cret")
    monkeypatch.delenv("NOT_THERE", raising=False)
    assert _expand("${CALC_TOKEN}") == "s3cret"  # the secret stays on the agent's host
    assert _expand("plain ${CALC_TOKEN}") == "plain ${CALC_TOKEN}"
    with pytest.raises(TaskFailed, match="NOT_THERE is not set"):
        _expand("${NOT_THERE}")


async def test_a_wrong_bearer_token_fails_naming_the_server(
    http_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from agentd.errors import TaskFailed
    from agentd.mcp_tools import open_servers
    from agentd.sandbox import Sandbox
    from agentd.tools import ToolEnv
    from agentd.workspace import Workspace
    from orchgpt.agent_defs import McpServer

    env = ToolEnv(Workspace(tmp_path), Sandbox(tmp_path))
    web = {"web": McpServer(url=http_server, bearer_env="CALC_TOKEN", timeout=10)}
    monkeypatch.setenv("CALC_TOKEN", "wrong")
    with pytest.raises(TaskFailed, match=r"the MCP server web \(http://127\.0\.0\.1:\d+/mcp\) cannot"):
        async with contextlib.AsyncExitStack() as stack:
            await open_servers(stack, web, env)
    monkeypatch.setenv("CALC_TOKEN", TOKEN)
    async with contextlib.AsyncExitStack() as stack:
        tools = await open_servers(stack, web, env)
        assert await tools["web__shout"].handler(env, {"text": "ok"}) == "OK"
