"""A declared agent's task, in process against the scripted model: the definition's model name,
temperature and max_steps reach the loop, `approval = "always"` approves the answer too (with
feedback going back to the model), `ask_agent` delegates over the mesh's delegate path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentd.declared import DeclaredAgent
from agentd.errors import TaskFailed
from agentd.runtime import TaskContext
from agentd.settings import AgentSettings
from orchgpt.agent_defs import AgentDefinition
from orchgpt.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    Delegation,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
)
from tests.support.scripted_openai import ScriptedOpenAI, text, tool_call

pytestmark = pytest.mark.timeout(60)


def agent_for(base_url: str, **fields: Any) -> DeclaredAgent:
    settings = AgentSettings.for_endpoint(base_url, api_key="sk-x", model="scripted-model")
    agent = DeclaredAgent("critic", settings)
    d = AgentDefinition(name="critic", system_prompt="You criticise.", **fields)
    assert agent.on_definition(d.to_json())
    return agent


def context(tmp_path: Path, answers: list[ApprovalResponse], delegated: list[Delegation]) -> TaskContext:
    asked: list[ApprovalRequest] = []
    events: list[TaskEvent] = []

    async def approve(req: ApprovalRequest) -> ApprovalResponse:
        asked.append(req)
        return answers.pop(0)

    async def delegate(sub: Delegation) -> TaskResult:
        delegated.append(sub)
        return TaskResult("sub", TaskState.SUCCEEDED, output=f"{sub.agent_type} says ok")

    ws = tmp_path / "ws"
    ws.mkdir(parents=True)
    ctx = TaskContext(
        Task("t1", "critic", input="criticise this"),
        ws,
        "a1",
        events.append,
        delegate=delegate,
        approve=approve,
    )
    ctx.asked = asked  # type: ignore[attr-defined]
    return ctx


async def test_always_approves_the_answer_and_feedback_goes_back(tmp_path: Path) -> None:
    with ScriptedOpenAI(
        [
            tool_call("ask_agent", {"agent_type": "reviewer", "input": "look"}),
            text("draft"),
            text("final"),
        ],
        models=("scripted-model",),
    ) as srv:
        agent = agent_for(
            srv.base_url,
            approval="always",
            tools=["ask_agent"],
            model="big-model",
            temperature=0.3,
            max_steps=3,
        )
        delegated: list[Delegation] = []
        answers = [
            ApprovalResponse("x", ApprovalDecision.APPROVE),  # the ask_agent call
            ApprovalResponse("x", ApprovalDecision.FEEDBACK, feedback="shorter"),  # "draft"
            ApprovalResponse("x", ApprovalDecision.APPROVE),
        ]  # "final"
        ctx = context(tmp_path, answers, delegated)
        out = await asyncio.wait_for(agent.run(ctx), 30)
        assert out.ok and out.output == "final"
        assert [r.tool for r in ctx.asked] == ["ask_agent", "answer", "answer"]  # type: ignore[attr-defined]
        assert delegated[0].agent_type == "reviewer" and delegated[0].input == "look"
        reqs = srv.chat_requests
        assert {r["model"] for r in reqs} == {"big-model"} and reqs[0]["temperature"] == 0.3
        assert any(m.get("role") == "tool" and m.get("content") == "reviewer says ok" for m in reqs[1]["messages"])
        assert "shorter" in reqs[2]["messages"][-1]["content"]


async def test_a_rejected_answer_fails_the_task_and_no_definition_fails_clearly(
    tmp_path: Path,
) -> None:
    with ScriptedOpenAI([text("draft")], models=("scripted-model",)) as srv:
        agent = agent_for(srv.base_url, approval="always")
        ctx = context(tmp_path, [ApprovalResponse("x", ApprovalDecision.REJECT)], [])
        with pytest.raises(TaskFailed, match="rejected the agent's answer"):
            await asyncio.wait_for(agent.run(ctx), 30)
    bare = DeclaredAgent("ghost", None)
    assert not bare.on_definition("") and bare.missing.is_set()
    with pytest.raises(TaskFailed, match="sent no definition of the agent type 'ghost'"):
        await bare.run(context(tmp_path / "b", [], []))
