"""Helpers for the workflow tests: workflow files, a daemon that loads them, running one through
the client API (answering the user_proxy questions), and a scripted model that answers each turn
by the speaker's system prompt and the turn number."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchgpt.models import ApprovalDecision, ApprovalResponse, Command, TaskEvent
from tests.support.mesh import Daemon
from tests.support.scripted_openai import Response, last_text, system_text, text

TURN_RE = re.compile(r"This is turn (\d+) of")


def write(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / f"{name}.toml"
    p.write_text(body)
    return p


def assistant(name: str, prompt: str, description: str = "") -> str:
    """An inline participant table running as the built-in ``assistant`` type."""
    return f'{{name = "{name}", type = "assistant", system_prompt = "{prompt}", description = "{description or name}"}}'


class Speakers:
    """A responder: the system prompt names the speaker ("You are NAME."); ``replies[NAME]`` is a
    list of answers used in turn; the speaker selector's and the summariser's answers come from
    ``select`` (a list) and ``summary``. Every request is counted per (speaker, turn)."""

    def __init__(
        self,
        replies: dict[str, list[str]],
        select: list[str] | None = None,
        summary: str = "the summary",
    ) -> None:
        self.replies = replies
        self.select = list(select or [])
        self.summary = summary
        self.used: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []  # (speaker, turn number or 0)

    def __call__(self, req: dict[str, Any]) -> Response:
        sys_ = system_text(req)
        last = last_text(req)
        if "choose the next speaker" in sys_:
            self.calls.append(("select", 0))
            return text(self.select.pop(0) if self.select else "nobody")
        if "summarise the conversation" in sys_:
            self.calls.append(("summary", 0))
            return text(self.summary)
        m = re.search(r"You are (\w[\w-]*)\.", sys_)
        who = m.group(1) if m else "?"
        t = TURN_RE.search(last)
        self.calls.append((who, int(t.group(1)) if t else 0))
        n = self.used.get(who, 0)
        self.used[who] = n + 1
        answers = self.replies.get(who) or [f"{who} has nothing to say"]
        return text(answers[min(n, len(answers) - 1)])


async def run(
    d: Daemon, name: str, task: str, answers: list[str] | None = None, session_id: str = ""
) -> tuple[list[TaskEvent], Any]:
    """Run a workflow through the client API; user_proxy questions get ``answers`` in order.
    Returns (every event, the final result)."""
    todo = list(answers or [])
    events: list[TaskEvent] = []
    async with d.client(timeout=30) as c:
        cmd = Command("workflow", input=task, options={"workflow": name}, session_id=session_id)
        async for ev in c.submit(cmd):
            events.append(ev)
            if ev.kind == "approval" and ev.approval is not None and ev.approval.question:
                a = todo.pop(0) if todo else ""
                await c.approve(
                    ev.task_id,
                    ApprovalResponse(ev.approval.request_id, ApprovalDecision.APPROVE, answer=a),
                )
            if ev.kind == "result" and ev.task_id == cmd_root(events):
                return events, ev.result
    raise AssertionError("the stream ended without the workflow's result")


def cmd_root(events: list[TaskEvent]) -> str:
    return events[0].task_id if events else ""
