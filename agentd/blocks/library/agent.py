"""The agent block: runs any mesh agent type (built-in, declared or remote) with its input,
as a delegated sub-task, and returns its result and artifacts. In a graph the node is routed
straight to that agent type (agentd/blocks/graph_run.py); run() here serves the blocks agent."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from orchgpt.models import Action, Delegation, TaskResult, TaskState

from ..base import Block, BlockContext, BlockOutput


def outputs_of(result: TaskResult) -> list[tuple[str, Any]]:
    """The agent block's outputs for a sub-task's result."""
    if not result.ok:
        return [
            (
                "error",
                f"{result.agent_type or 'agent'} task {result.task_id} {result.state}: {result.error or result.output}",
            )
        ]
    return [
        ("result", result.output),
        (
            "artifacts",
            [{"path": a.path, "size": a.size, "sha256": a.sha256} for a in result.artifacts],
        ),
        ("task_id", result.task_id),
    ]


class AgentBlock(Block):
    id = "agent"
    name = "Agent"
    description = (
        "runs a mesh agent type (echo, architect, a remote type...) with the input; "
        "'result' is its output, 'artifacts' its files"
    )
    categories = ("agent",)

    class Input(BaseModel):
        agent_type: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
        input: str = ""
        action: Literal["create", "run"] = "run"
        language: str = "python"
        options: dict[str, str] = Field(default_factory=dict)

    class Output(BaseModel):
        result: str
        artifacts: list[dict[str, Any]]
        task_id: str

    test_input = {"agent_type": "echo", "input": "ping"}
    test_output = [("result", "ping"), ("artifacts", []), ("task_id", "t-1")]

    @staticmethod
    async def _fake_call(sub: Delegation, ctx: BlockContext) -> TaskResult:
        return TaskResult("t-1", TaskState.SUCCEEDED, output=sub.input, agent_type=sub.agent_type)

    test_mock = {"call_agent": _fake_call}

    async def call_agent(self, sub: Delegation, ctx: BlockContext) -> TaskResult:
        if ctx.delegate is None:
            raise RuntimeError("this block runs outside the mesh: it cannot reach agents")
        return await ctx.delegate(sub)

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        sub = Delegation(
            input.agent_type,
            input.input,
            language=input.language,
            action=Action(input.action),
            options=dict(input.options),
            key=f"agent:{ctx.node_id}" if ctx.node_id else "",
        )
        for pin, value in outputs_of(await self.call_agent(sub, ctx)):
            yield pin, value
