"""user_proxy: the human in a workflow (AutoGen's UserProxyAgent).

Its turn asks the user through the approval path: an APPROVAL event whose request carries a
``question`` (and ``choices`` when the user picks among them, e.g. the next speaker); the CLI
asks the question, in the REPL, with --json or from a script, and answers with Approve (the
response's ``answer``). The answer is the turn's output. Options: ``question`` (what to ask;
default: the input), ``choices`` (comma-separated). A rejection (``n``) fails the turn, which
stops the workflow.
"""

from __future__ import annotations

from orchgpt.models import ApprovalDecision

from ..errors import TaskFailed
from ..runtime import Agent, Outcome, TaskContext, register


@register
class UserProxyAgent(Agent):
    type = "user_proxy"
    capabilities = ("human",)
    description = "asks the user and answers with what they say"
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        opts = ctx.task.options
        question = opts.get("question") or ctx.task.input
        choices = [c.strip() for c in opts.get("choices", "").split(",") if c.strip()]
        ctx.status("waiting for the user")
        r = await ctx.ask_user(question, choices)
        if r.decision == ApprovalDecision.REJECT:
            raise TaskFailed(f"the user declined to answer{': ' + r.feedback if r.feedback else ''}")
        answer = (r.answer or r.feedback).strip()
        if choices and answer and answer not in choices:
            low = {c.lower(): c for c in choices}
            answer = low.get(answer.lower(), answer)
        return Outcome(output=answer, data={"answered": "true"})
