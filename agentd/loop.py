"""The task loop: the model plans, acts with tools, observes the results, repeats.

    loop = TaskLoop(ctx, llm, toolbox)
    res = await loop.run([{"role": "system", ...}, {"role": "user", "content": task}])
    res.content, res.stopped       # the final answer; "done", "max_steps" or "token_budget"

One *step* is one model reply and the tool calls it asks for. Every step is a
STEP event (``ctx.step``); the model's tokens stream as TOKEN events; usage is
added to the task (``ctx.add_usage``). The loop stops when the model answers
without a tool call, after ``max_steps`` steps of one `run`, or when the task
has spent its token budget (over all runs of this loop, so that an agent that
calls `run` again to repair something stays inside the same budget).

Approval mode (``ctx.task.approval``): every tool call is first sent to the
user (``ctx.approve``): approve, reject, approve this and the next N-1 calls,
or feedback text that goes back to the model as the tool's result instead of
running it.

A failing model server ends the task with TaskFailed naming the server's error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import structlog

from orchgpt.models import ApprovalDecision, Usage

from .errors import LLMError, TaskFailed
from .llm import LLM
from .llm.types import ChatResult, ToolCall, tool_result_message
from .runtime import TaskContext
from .tools import Toolbox

log = structlog.get_logger("agentd.loop")

DONE = "done"
MAX_STEPS = "max_steps"
TOKEN_BUDGET = "token_budget"
ARGS_SHOWN = 500  # characters of a tool call's arguments in its STEP event


@dataclass
class LoopResult:
    content: str  # the model's last answer
    stopped: str  # DONE, MAX_STEPS or TOKEN_BUDGET
    steps: int  # steps of this run
    messages: list[dict[str, Any]]  # the history, ready to extend and run again
    tool_calls: list[tuple[str, bool]] = field(default_factory=list)  # (tool, ok) in order

    @property
    def done(self) -> bool:
        return self.stopped == DONE


class TaskLoop:
    def __init__(
        self,
        ctx: TaskContext,
        llm: LLM,
        toolbox: Toolbox,
        *,
        model: str = "smart",
        max_steps: int | None = None,
        token_budget: int | None = None,
        reserve_tokens: int = 1024,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.llm = llm
        self.toolbox = toolbox
        self.model = model
        self.max_steps = max_steps or int(getattr(settings, "max_steps", 12) or 12)
        self.token_budget = token_budget or int(getattr(settings, "token_budget", 60000) or 60000)
        self.reserve_tokens = reserve_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.usage = Usage()  # this loop's spending, over all runs
        self.total_steps = 0
        self._approve_left = 0  # "approve the next N" still to use

    @property
    def budget_left(self) -> int:
        return self.token_budget - self.usage.total_tokens

    async def run(self, messages: list[dict[str, Any]]) -> LoopResult:
        history = list(messages)
        calls: list[tuple[str, bool]] = []
        content = ""
        for step in range(1, self.max_steps + 1):
            if self.budget_left <= 0:
                return self._stop(TOKEN_BUDGET, content, step - 1, history, calls)
            res, history = await self._chat(history)
            self.total_steps += 1
            content = res.content
            history.append(res.assistant_message())
            if res.finish_reason == "invalid_tool_call" and not res.tool_calls:
                self.ctx.step(f"step {step}: the model's tool call was malformed", step=str(step), ok="false")
                history.append(
                    {
                        "role": "user",
                        "content": f"Your tool call could not be used: {res.tool_error}. "
                        "Call one of the tools with valid JSON arguments, or answer without a tool.",
                    }
                )
                continue
            if not res.tool_calls:
                self.ctx.step(f"step {step}: answered", step=str(step), tokens=str(self.usage.total_tokens))
                return self._stop(DONE, content, step, history, calls)
            for call in res.tool_calls:
                output, ok = await self._act(call, step)
                calls.append((call.name, ok))
                history.append(tool_result_message(call, output))
        return self._stop(MAX_STEPS, content, self.max_steps, history, calls)

    # ---------------------------------------------------------------- internals
    async def _chat(self, history: list[dict[str, Any]]) -> tuple[ChatResult, list[dict[str, Any]]]:
        """One model reply, the history first cut to the context window."""
        try:
            history = await self.llm.fit(history, self.model, reserve=self.reserve_tokens)
            res: ChatResult = await self.llm.chat(
                history,
                tools=self.toolbox.specs() or None,
                model=self.model,
                on_token=self.ctx.token,
                max_tokens=self.max_tokens,
                **({"temperature": self.temperature} if self.temperature is not None else {}),
            )
        except LLMError as exc:
            raise TaskFailed(f"the model server failed: {exc}") from exc
        self.usage.add(res.usage)
        self.ctx.add_usage(res.usage)
        return res, history

    async def _act(self, call: ToolCall, step: int) -> tuple[str, bool]:
        summary = self.toolbox.summary(call.name, call.arguments)
        refusal = await self._ask(call, summary)
        if refusal is not None:
            self.ctx.step(
                f"step {step}: {summary} (not run: {refusal[:80]})",
                step=str(step),
                tool=call.name,
                ok="false",
                approved="false",
            )
            return refusal, False
        output, ok = await self.toolbox.call(call.name, call.arguments)
        first = output.strip().splitlines()[0][:120] if output.strip() else ""
        self.ctx.step(
            f"step {step}: {summary}" + ("" if ok else f" → {first}"),
            step=str(step),
            tool=call.name,
            ok=str(ok).lower(),
            arguments=json.dumps(call.arguments, ensure_ascii=False)[:ARGS_SHOWN],
            result=first,
        )
        log.info("tool_call", task_id=self.ctx.task.task_id, step=step, tool=call.name, ok=ok)
        return output, ok

    async def _ask(self, call: ToolCall, summary: str) -> str | None:
        """None when the call may run; otherwise the text the model gets instead of a result."""
        if not self.ctx.task.approval:
            return None
        if self._approve_left > 0:
            self._approve_left -= 1
            return None
        try:
            resp = await self.ctx.approve(call.name, json.dumps(call.arguments, ensure_ascii=False), summary)
        except RuntimeError as exc:
            raise TaskFailed(f"the task asks for approval of each tool call but nobody can answer: {exc}") from exc
        decision = ApprovalDecision(resp.decision)
        if decision == ApprovalDecision.APPROVE:
            return None
        if decision == ApprovalDecision.APPROVE_NEXT:
            self._approve_left = max(int(resp.count or 1), 1) - 1
            return None
        if decision == ApprovalDecision.FEEDBACK and resp.feedback.strip():
            return (
                "The user did not let this tool call run and answered: "
                f"{resp.feedback.strip()}\nTake this into account and continue."
            )
        return "The user rejected this tool call. Do not repeat it; continue another way or finish."

    def _stop(
        self, why: str, content: str, steps: int, history: list[dict[str, Any]], calls: list[tuple[str, bool]]
    ) -> LoopResult:
        if why != DONE:
            limit = (
                f"{self.max_steps} steps"
                if why == MAX_STEPS
                else f"token budget {self.token_budget} ({self.usage.total_tokens} used)"
            )
            self.ctx.log(f"task loop stopped: {limit}")
        return LoopResult(content, why, steps, history, calls)
