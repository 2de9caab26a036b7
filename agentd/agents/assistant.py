"""assistant: answers its input with one model call (AutoGen's AssistantAgent).

A workflow's generic participant, its speaker selector (``auto``) and its summariser
(``summary_method = "llm"``). Options: ``system_prompt`` (default: a helpful assistant),
``model`` (``smart`` (default), ``fast`` or a model name), ``temperature``. The answer streams as
token events.
"""

from __future__ import annotations

from typing import Any

from ..errors import AgentdError, TaskFailed
from ..runtime import Outcome, TaskContext, register
from ._llm_agent import LLMAgent

DEFAULT_PROMPT = "You are a helpful assistant. Answer concisely."


@register
class AssistantAgent(LLMAgent):
    type = "assistant"
    capabilities = ("chat",)
    description = "answers with one model call, under the system prompt it is given"

    async def run(self, ctx: TaskContext) -> Outcome:
        opts = ctx.task.options
        text = ctx.task.input.strip()
        if not text:
            raise TaskFailed("the assistant needs an input")
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": opts.get("system_prompt") or DEFAULT_PROMPT},
            {"role": "user", "content": text},
        ]
        temperature = float(opts["temperature"]) if opts.get("temperature") else None
        try:
            async with self.session(ctx, tools=()) as s:
                res = await s.llm.chat(
                    messages,
                    model=opts.get("model") or "smart",
                    on_token=ctx.token,
                    temperature=temperature,
                )
        except AgentdError as exc:
            raise TaskFailed(f"no answer from the model: {exc}") from None
        ctx.add_usage(res.usage)
        return Outcome(output=res.content.strip(), data={"model": res.usage.model})
