"""A declared agent type: a system prompt, a model, tools and MCP servers, from a definition
(orchgpt/agent_defs.py) that the daemon sends with REGISTERED, so that `agentd --type NAME`
runs a declared type on any host without a copy of its file.

A task runs the usual task loop (agentd/loop.py): the system prompt, then the task (with the
results of earlier tasks it was given); the model calls the tools the definition lists (the
built-in registry, ``ask_agent`` and the MCP servers' tools) until it answers. ``approval``:
``never`` asks only when the task itself asks (``--approve``); ``tools`` asks before every tool
call; ``always`` asks before every tool call and before the answer is returned (feedback on the
answer goes back to the model). Files the task leaves in its workspace are its artifacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from typing import Any

import structlog

from orchgpt.agent_defs import AgentDefinition
from orchgpt.models import ApprovalDecision

from .agents._llm_agent import LLMAgent, inputs_brief, record_artifacts
from .errors import TaskFailed
from .llm import LLM
from .loop import TaskLoop
from .runtime import Outcome, TaskContext
from .tools import Toolbox, ToolEnv
from .tools_agents import ASK_AGENT

log = structlog.get_logger("agentd.declared")

ANSWER_TOOL = "answer"  # the approval of a final answer (approval = "always")
MAX_ANSWER_ROUNDS = 3


class DeclaredAgent(LLMAgent):
    """Runs whatever definition the daemon sent last for its type."""

    tools = ()

    def __init__(self, agent_type: str, settings: Any = None) -> None:
        super().__init__(settings)
        self.type = agent_type  # type: ignore[misc]
        self.definition: AgentDefinition | None = None
        self.missing = asyncio.Event()  # set when a REGISTERED came without a usable definition

    # ---- from the link
    def on_definition(self, definition_json: str) -> bool:
        """REGISTERED's definition ("" when the daemon has none): True when it can be run."""
        ok = self._define(definition_json)
        if not ok:
            self.missing.set()
        return ok

    def _define(self, definition_json: str) -> bool:
        if not definition_json:
            return self.definition is not None
        try:
            d = AgentDefinition.from_json(definition_json)
        except Exception as exc:
            log.error("definition_invalid", agent_type=self.type, error=str(exc))
            return self.definition is not None
        if d.name != self.type:
            log.error("definition_for_another_type", agent_type=self.type, name=d.name)
            return self.definition is not None
        if d != self.definition:
            log.info("definition_received", agent_type=self.type, tools=d.tools, mcp=list(d.mcp))
        self.definition = d
        self.capabilities = tuple(d.capabilities)  # type: ignore[misc]
        self.description = d.description  # type: ignore[misc]
        return True

    # ---- a task
    def _model(self, d: AgentDefinition, ctx: TaskContext) -> tuple[Any, str]:
        settings = self.settings_for(ctx)
        if d.model in ("smart", "fast"):
            return settings, d.model
        smart = replace(settings.smart, model=d.model, base_url=d.base_url or settings.smart.base_url)
        return replace(settings, smart=smart), "smart"

    async def run(self, ctx: TaskContext) -> Outcome:
        d = self.definition
        if d is None:
            raise TaskFailed(
                f"orchgpt sent no definition of the agent type {self.type!r} "
                "(declare it in the daemon's agents directory)"
            )
        settings, role = self._model(d, ctx)
        ctx.settings = settings
        if d.approval != "never":
            ctx.task.approval = True
        env = ToolEnv.for_context(ctx)
        toolbox = Toolbox(env, [t for t in d.tools if t != ASK_AGENT.spec.name])
        if ASK_AGENT.spec.name in d.tools:
            toolbox.tools[ASK_AGENT.spec.name] = ASK_AGENT
        llm = LLM(settings)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(llm.aclose)
            if d.mcp:
                from .mcp_tools import open_servers

                ctx.status(f"starting MCP servers: {', '.join(d.mcp)}")
                toolbox.tools.update(await open_servers(stack, d.mcp, env))
            loop = TaskLoop(ctx, llm, toolbox, model=role, max_steps=d.max_steps, temperature=d.temperature)
            messages = [
                {"role": "system", "content": self._system(d, toolbox)},
                {"role": "user", "content": self._brief(ctx)},
            ]
            res = await loop.run(messages)
            for _ in range(MAX_ANSWER_ROUNDS if d.approval == "always" else 0):
                feedback = await self._approve_answer(ctx, res.content)
                if feedback is None:
                    break
                res = await loop.run([*res.messages, {"role": "user", "content": feedback}])
        record_artifacts(ctx)
        data = {"stopped": res.stopped, "steps": str(loop.total_steps), "agent_definition": d.name}
        if not res.content.strip() and not res.done:
            return Outcome(ok=False, error=f"the agent stopped without an answer ({res.stopped})", data=data)
        return Outcome(output=res.content, data=data)

    def _system(self, d: AgentDefinition, toolbox: Toolbox) -> str:
        text = d.system_prompt.strip()
        if toolbox.tools:
            text += (
                "\n\nThe files you work on are in the task's workspace. Use the tools when they "
                "help; when you are done, answer without calling a tool."
            )
        return text

    def _brief(self, ctx: TaskContext) -> str:
        text = ctx.task.input
        earlier = inputs_brief(ctx)
        if earlier:
            text += f"\n\nResults of earlier steps:\n{earlier}"
        return text

    async def _approve_answer(self, ctx: TaskContext, answer: str) -> str | None:
        """None when the user accepts the answer; else what the model is told to do."""
        resp = await ctx.approve(ANSWER_TOOL, json.dumps({"answer": answer[:4000]}), f"answer: {answer[:120]}")
        decision = ApprovalDecision(resp.decision)
        if decision in (ApprovalDecision.APPROVE, ApprovalDecision.APPROVE_NEXT):
            return None
        if decision == ApprovalDecision.FEEDBACK and resp.feedback.strip():
            return f"The user did not accept this answer and said: {resp.feedback.strip()}\nRevise it."
        raise TaskFailed("the user rejected the agent's answer")
