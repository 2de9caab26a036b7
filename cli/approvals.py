"""Answering approval requests: a proposed tool call waits for y / n / a N / feedback.

In the REPL the request is shown above the prompt and the prompt turns into the
question; the next line that does not start with "/" answers the oldest
pending request (or `/approve ID ANSWER` answers a given task's).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ParseError

if TYPE_CHECKING:
    from orchgpt.models import ApprovalRequest, ApprovalResponse

    from .runner import TaskView

ANSWER_HELP = (
    "y = approve, y -N (or a N) = approve this and the next N-1 calls, n = reject and stop the "
    "task, other text = reject with that feedback"
)
# Seed 003 (AutoGPT): "'n' to exit program". Here the program is the task: the call is rejected
# with this feedback and the CLI then cancels the task (cli.runner.answer).
STOP_FEEDBACK = "rejected by the user, who stopped the task"
_YES_N = re.compile(r"^(?:y|yes)\s*-\s*(\S+)$")


def parse_answer(request_id: str, text: str) -> ApprovalResponse:
    """y / yes, y -N / a N / all N, n / no, anything else: feedback for the model.

    ``y -N`` is AutoGPT's "run N continuous commands" (seed 003): this call and the next N-1.
    ``n`` is its "exit program": a rejection that stops the task (see ``stops_task``).
    """
    from orchgpt.models import ApprovalDecision, ApprovalResponse

    t = text.strip()
    low = t.lower()
    if not t:
        raise ParseError(f"empty answer: {ANSWER_HELP}")
    if low in ("y", "yes"):
        return ApprovalResponse(request_id, ApprovalDecision.APPROVE)
    if low in ("n", "no"):
        return ApprovalResponse(request_id, ApprovalDecision.REJECT, feedback=STOP_FEEDBACK)
    m = _YES_N.match(low)
    if m:
        try:
            count = int(m.group(1))
        except ValueError:
            raise ParseError(f'"y -N" needs a number, e.g. y -5 ({ANSWER_HELP})') from None
        if count < 1:
            raise ParseError(f'"y -N" needs a number of calls of 1 or more, e.g. y -5 ({ANSWER_HELP})')
        return ApprovalResponse(request_id, ApprovalDecision.APPROVE_NEXT, count=count)
    head, _, rest = low.partition(" ")
    if head in ("a", "all"):
        try:
            count = int(rest.strip() or "0")
        except ValueError:
            raise ParseError(f'"a" needs a number, e.g. a 5 ({ANSWER_HELP})') from None
        if count < 1:
            raise ParseError(f'"a" needs a number of calls of 1 or more, e.g. a 5 ({ANSWER_HELP})')
        return ApprovalResponse(request_id, ApprovalDecision.APPROVE_NEXT, count=count)
    return ApprovalResponse(request_id, ApprovalDecision.FEEDBACK, feedback=t)


def answer_question(request: ApprovalRequest, text: str) -> ApprovalResponse:
    """The answer to a question (``request.question``): the text as it is (empty: pass); with
    ``choices``, a number picks one of them."""
    from orchgpt.models import ApprovalDecision, ApprovalResponse

    t = text.strip()
    if request.choices and t.isdigit() and 1 <= int(t) <= len(request.choices):
        t = request.choices[int(t) - 1]
    return ApprovalResponse(request.request_id, ApprovalDecision.APPROVE, answer=t)


def stops_task(response: ApprovalResponse) -> bool:
    """The user answered ``n``: after the rejection the task is cancelled."""
    from orchgpt.models import ApprovalDecision

    return response.decision == ApprovalDecision.REJECT and response.feedback == STOP_FEEDBACK


@dataclass
class Pending:
    view: TaskView
    request: ApprovalRequest
    future: asyncio.Future[ApprovalResponse] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def answer(self, text: str) -> ApprovalResponse:
        if self.request.question:  # a question (a workflow's user_proxy turn): the text is the answer
            response = answer_question(self.request, text)
        else:
            response = parse_answer(self.request.request_id, text)
        if not self.future.done():
            self.future.set_result(response)
        return response


class ApprovalQueue:
    """The REPL's approval requests, oldest first."""

    def __init__(self) -> None:
        self.pending: list[Pending] = []

    def __len__(self) -> int:
        return len(self.pending)

    def head(self) -> Pending | None:
        self.pending = [p for p in self.pending if not p.future.done() and not p.view.done.is_set()]
        return self.pending[0] if self.pending else None

    async def ask(self, view: TaskView, request: ApprovalRequest) -> ApprovalResponse | None:
        p = Pending(view, request)
        self.pending.append(p)
        try:
            done: asyncio.Future[object] = asyncio.ensure_future(view.done.wait())
            futures: list[asyncio.Future[object]] = [p.future, done]  # type: ignore[list-item]
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            return p.future.result() if p.future.done() else None
        finally:
            if p in self.pending:
                self.pending.remove(p)

    def for_task(self, ref: str) -> Pending | None:
        for p in self.pending:
            if p.view.task_id.startswith(ref) and not p.future.done():
                return p
        return None
