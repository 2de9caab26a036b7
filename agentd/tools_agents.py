"""``ask_agent``: the tool with which a declared agent gives a sub-task to another agent type.

The sub-task is a DELEGATE_TASK routed by the mesh like any other (a child of the running
task: its events stream under the parent, a cancel of the parent cancels it); the tool's
result is the other agent's answer, or its error.
"""

from __future__ import annotations

from typing import Any

from orchgpt.models import Action, Delegation

from .errors import ToolError
from .llm.types import ToolSpec
from .tools import Tool, ToolEnv

ANSWER_LIMIT = 20_000  # characters of the other agent's answer the model reads


async def ask_agent(env: ToolEnv, args: dict[str, Any]) -> str:
    agent_type = str(args.get("agent_type") or "").strip().lower()
    text = args.get("input")
    if not agent_type:
        raise ToolError("missing argument 'agent_type'")
    if not isinstance(text, str) or not text.strip():
        raise ToolError("missing argument 'input' (the task for the other agent, as text)")
    ctx = env.ctx
    if ctx is None:
        raise ToolError("this agent cannot reach the mesh")
    if agent_type == ctx.task.agent_type:
        raise ToolError(f"an agent cannot ask its own type ({agent_type}); answer yourself")
    try:
        res = await ctx.delegate(Delegation(agent_type, text, action=Action.RUN))
    except RuntimeError as exc:
        raise ToolError(str(exc)) from None
    if not res.ok:
        raise ToolError(f"the {agent_type} agent failed: {res.error or res.state}")
    out: str = res.output
    if len(out) > ANSWER_LIMIT:
        out = out[:ANSWER_LIMIT] + "\n[... cut ...]"
    files = ", ".join(a.path for a in res.artifacts)
    return out + (f"\n(files: {files})" if files else "")


ASK_AGENT = Tool(
    ToolSpec(
        "ask_agent",
        "Give a task to another agent of the mesh (by its agent type, e.g. 'reviewer') and return its answer.",
        {
            "type": "object",
            "properties": {
                "agent_type": {"type": "string", "description": "the other agent's type"},
                "input": {"type": "string", "description": "the task for it, as text"},
            },
            "required": ["agent_type", "input"],
        },
    ),
    ask_agent,
    lambda a: f"ask {a.get('agent_type', '?')}: {str(a.get('input', ''))[:150]}",
)
