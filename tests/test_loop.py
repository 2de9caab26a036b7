"""The task loop against the scripted OpenAI-compatible server (real HTTP, real tools)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.errors import TaskFailed
from agentd.llm import LLM
from agentd.loop import DONE, MAX_STEPS, TOKEN_BUDGET, TaskLoop
from agentd.runtime import TaskContext
from agentd.settings import AgentSettings
from agentd.tools import Toolbox, ToolEnv
from orchgpt.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    EventKind,
    Task,
    TaskEvent,
)
from tests.support.scripted_openai import ScriptedOpenAI, compat_call, error, text, tool_call

TIMEOUT = 30


class Harness:
    """A TaskContext whose events land in a list, and an approver that answers from a list."""

    def __init__(
        self,
        tmp_path: Path,
        base_url: str,
        *,
        approval: bool = False,
        answers: list[ApprovalResponse] | None = None,
        **model_opts: Any,
    ) -> None:
        self.events: list[TaskEvent] = []
        self.asked: list[ApprovalRequest] = []
        self.answers = list(answers or [])
        self.settings = AgentSettings.for_endpoint(
            base_url, api_key="sk-scripted", workspace_root=tmp_path / "ws", **model_opts
        )
        self.settings.sandbox_timeout_s = 10
        ws = tmp_path / "ws" / "t1"
        ws.mkdir(parents=True)
        task = Task(task_id="t1", agent_type="backend", input="work", approval=approval)
        self.ctx = TaskContext(
            task,
            ws,
            "agent-1",
            self.events.append,
            approve=self._approve if answers is not None else None,
            settings=self.settings,
        )
        self.llm = LLM(self.settings)
        self.toolbox = Toolbox(ToolEnv.for_context(self.ctx))

    async def _approve(self, req: ApprovalRequest) -> ApprovalResponse:
        self.asked.append(req)
        return self.answers.pop(0)

    def loop(self, **kw: Any) -> TaskLoop:
        return TaskLoop(self.ctx, self.llm, self.toolbox, **kw)

    def of(self, kind: EventKind) -> list[TaskEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture
def server() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as srv:
        yield srv


def start(task: str = "Write hello.py and run it.") -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a careful engineer."}, {"role": "user", "content": task}]


async def test_model_calls_tools_and_observes(tmp_path: Path, server: ScriptedOpenAI) -> None:
    server.push(
        tool_call("write_file", {"path": "hello.py", "content": "print('hello from the sandbox')\n"}),
        tool_call("run_command", {"command": "python hello.py"}),
        text("All done: hello.py prints its greeting."),
    )
    h = Harness(tmp_path, server.base_url)
    res = await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
    assert res.stopped == DONE and res.steps == 3
    assert res.content == "All done: hello.py prints its greeting."
    assert res.tool_calls == [("write_file", True), ("run_command", True)]
    assert (h.ctx.workspace / "hello.py").exists()
    # The model observed the command's output as the tool result.
    third = server.chat_requests[2]["messages"]
    tool_msgs = [m for m in third if m["role"] == "tool"]
    assert len(tool_msgs) == 2 and "hello from the sandbox" in tool_msgs[1]["content"]
    assert "exit code 0" in tool_msgs[1]["content"]
    steps = h.of(EventKind.STEP)
    assert [e.data.get("tool", "") for e in steps] == ["write_file", "run_command", ""]
    assert steps[0].text == "step 1: write hello.py (32 chars)"
    assert steps[-1].text == "step 3: answered"
    assert "".join(e.text for e in h.of(EventKind.TOKEN)) == res.content
    assert h.ctx.usage.calls == 3 and h.ctx.usage.total_tokens > 0
    await h.llm.aclose()


async def test_failed_tool_call_goes_back_to_the_model(tmp_path: Path, server: ScriptedOpenAI) -> None:
    server.push(tool_call("read_file", {"path": "../../etc/passwd"}), text("I may not read that."))
    h = Harness(tmp_path, server.base_url)
    res = await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
    assert res.tool_calls == [("read_file", False)]
    tool_msg = server.chat_requests[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and "leaves the workspace" in tool_msg["content"]
    assert h.of(EventKind.STEP)[0].data["ok"] == "false"
    await h.llm.aclose()


async def test_max_steps_bound(tmp_path: Path, server: ScriptedOpenAI) -> None:
    server.responder = lambda req: tool_call("list_files", {})
    h = Harness(tmp_path, server.base_url)
    res = await asyncio.wait_for(h.loop(max_steps=3).run(start()), TIMEOUT)
    assert res.stopped == MAX_STEPS and res.steps == 3
    assert len(server.chat_requests) == 3
    assert any("task loop stopped: 3 steps" in e.text for e in h.of(EventKind.LOG))
    await h.llm.aclose()


async def test_token_budget_bound(tmp_path: Path, server: ScriptedOpenAI) -> None:
    usage = {"prompt_tokens": 400, "completion_tokens": 100}
    server.responder = lambda req: tool_call("list_files", {}, usage=usage)
    h = Harness(tmp_path, server.base_url)
    loop = h.loop(max_steps=50, token_budget=1200)
    res = await asyncio.wait_for(loop.run(start()), TIMEOUT)
    assert res.stopped == TOKEN_BUDGET
    assert len(server.chat_requests) == 3  # 500, 1000, 1500 tokens: no fourth call
    assert h.ctx.usage.total_tokens == 1500
    # A second run (a repair round) gets nothing more.
    res2 = await asyncio.wait_for(loop.run(res.messages), TIMEOUT)
    assert res2.stopped == TOKEN_BUDGET and len(server.chat_requests) == 3
    await h.llm.aclose()


async def test_approval_yes_no_feedback_and_next_n(tmp_path: Path, server: ScriptedOpenAI) -> None:
    for name in "abcde":
        server.push(tool_call("write_file", {"path": f"{name}.txt", "content": name}))
    server.push(text("finished"))
    answers = [
        ApprovalResponse("r1", ApprovalDecision.APPROVE),
        ApprovalResponse("r2", ApprovalDecision.REJECT),
        ApprovalResponse("r3", ApprovalDecision.FEEDBACK, feedback="name it c2.txt instead"),
        ApprovalResponse("r4", ApprovalDecision.APPROVE_NEXT, count=2),
    ]
    h = Harness(tmp_path, server.base_url, approval=True, answers=answers)
    res = await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
    assert res.stopped == DONE
    ws = h.ctx.workspace
    assert sorted(p.name for p in ws.iterdir()) == ["a.txt", "d.txt", "e.txt"]
    # Asked four times (e.txt was covered by "approve next 2"), each also an APPROVAL event.
    assert [json.loads(r.arguments_json)["path"] for r in h.asked] == ["a.txt", "b.txt", "c.txt", "d.txt"]
    assert h.asked[0].tool == "write_file" and h.asked[0].summary == "write a.txt (1 chars)"
    assert len(h.of(EventKind.APPROVAL)) == 4
    results = [m["content"] for m in server.chat_requests[-1]["messages"] if m["role"] == "tool"]
    assert results[0].startswith("wrote a.txt")
    assert "rejected" in results[1]
    assert "name it c2.txt instead" in results[2]
    assert results[3].startswith("wrote d.txt") and results[4].startswith("wrote e.txt")
    await h.llm.aclose()


async def test_approval_mode_without_an_approver_fails_cleanly(tmp_path: Path, server: ScriptedOpenAI) -> None:
    server.push(tool_call("write_file", {"path": "a.txt", "content": "a"}))
    h = Harness(tmp_path, server.base_url, approval=True, answers=None)
    with pytest.raises(TaskFailed, match="approval"):
        await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
    assert not (h.ctx.workspace / "a.txt").exists()
    await h.llm.aclose()


async def test_compat_mode_server_without_tools(tmp_path: Path) -> None:
    with ScriptedOpenAI(reject_tools=True) as srv:
        srv.push(compat_call("write_file", {"path": "x.txt", "content": "compat"}), text("done"))
        h = Harness(tmp_path, srv.base_url, tool_mode="compat")
        res = await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
        assert res.stopped == DONE and res.content == "done"
        assert (h.ctx.workspace / "x.txt").read_text() == "compat"
        await h.llm.aclose()


async def test_model_server_failure_is_a_clean_task_failure(tmp_path: Path) -> None:
    with ScriptedOpenAI([error(500, "the GPU caught fire")] * 3) as srv:
        h = Harness(tmp_path, srv.base_url, max_retries=1, backoff_s=0.01)
        with pytest.raises(TaskFailed, match="model server failed") as exc:
            await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
        assert "GPU caught fire" in str(exc.value) or "500" in str(exc.value)
        await h.llm.aclose()
    # Server gone entirely.
    h = Harness(tmp_path / "down", "http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    with pytest.raises(TaskFailed, match="model server failed"):
        await asyncio.wait_for(h.loop().run(start()), TIMEOUT)
    await h.llm.aclose()
