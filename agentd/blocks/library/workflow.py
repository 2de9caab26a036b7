"""The workflow block: runs a named workflow (orchgpt/workflows.py) as a delegated sub-task of
the ``workflow`` agent type, with option ``workflow=NAME``; the daemon fills in the definition
from its workflows directory (orchgpt/workflow_runs.py). In a graph the node is routed straight
to the ``workflow`` agent type (agentd/blocks/graph_run.py); run() here serves the blocks agent.
Its outputs: the workflow's ``result`` (its summary), the ``transcript`` (each turn's speaker
and content), its ``artifacts`` and the sub-task's ``task_id``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from orchgpt.models import Action, Delegation, TaskResult, TaskState
from orchgpt.workflows import NAME_OPTION

from ..base import Block, BlockContext, BlockOutput
from .agent import outputs_of

WORKFLOW_TYPE = "workflow"


def workflow_outputs(result: TaskResult) -> list[tuple[str, Any]]:
    """The workflow block's outputs for the workflow sub-task's result."""
    out = outputs_of(result)
    if not result.ok:
        return out
    try:
        turns = json.loads(result.data.get("transcript", "[]"))
    except ValueError:
        turns = []
    transcript = [
        {"speaker": str(t.get("speaker", "")), "content": str(t.get("content", ""))}
        for t in turns
        if isinstance(t, dict)
    ]
    return [out[0], ("transcript", transcript), *out[1:]]


class WorkflowBlock(Block):
    id = "workflow"
    name = "Workflow"
    description = (
        "runs a workflow of the daemon's workflows directory by name with the input as its "
        "task; 'result' is its summary, 'transcript' its turns, 'artifacts' its files"
    )
    categories = ("agent", "workflow")

    class Input(BaseModel):
        workflow: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,47}$")
        input: str = ""
        language: str = "python"
        options: dict[str, str] = Field(default_factory=dict)

    class Output(BaseModel):
        result: str
        transcript: list[dict[str, str]]
        artifacts: list[dict[str, Any]]
        task_id: str

    @classmethod
    def delegation(cls, input: Any, key: str, node_id: str = "") -> Delegation:
        """The sub-task that runs the workflow."""
        options = {**input.options, NAME_OPTION: input.workflow}
        if node_id:
            options["graph_node"] = node_id
        return Delegation(
            WORKFLOW_TYPE,
            input.input,
            language=input.language,
            action=Action.RUN,
            options=options,
            key=key,
        )

    test_input = {"workflow": "review", "input": "a function that parses ISO dates"}
    test_output = [
        ("result", "LGTM"),
        ("transcript", [{"speaker": "coder", "content": "def parse(): ..."}]),
        ("artifacts", []),
        ("task_id", "t-1"),
    ]

    @staticmethod
    async def _fake_call(sub: Delegation, ctx: BlockContext) -> TaskResult:
        assert sub.agent_type == WORKFLOW_TYPE and sub.options[NAME_OPTION] == "review"
        turns = [{"speaker": "coder", "content": "def parse(): ...", "turn": 1}]
        return TaskResult(
            "t-1",
            TaskState.SUCCEEDED,
            output="LGTM",
            agent_type=sub.agent_type,
            data={"transcript": json.dumps(turns)},
        )

    test_mock = {"call_agent": _fake_call}

    async def call_agent(self, sub: Delegation, ctx: BlockContext) -> TaskResult:
        if ctx.delegate is None:
            raise RuntimeError("this block runs outside the mesh: it cannot run workflows")
        return await ctx.delegate(sub)

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        key = f"workflow:{ctx.node_id}" if ctx.node_id else ""
        for pin, value in workflow_outputs(await self.call_agent(self.delegation(input, key), ctx)):
            yield pin, value
