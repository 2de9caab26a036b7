"""The workflow agent's texts and tallies: the prompts each turn gets, the speaker picked from a
selector's answer, and the usage summary (per agent and model, with start and end times)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchgpt.models import Usage
from orchgpt.workflows import Participant, Workflow

MAX_ENTRY = 32_000  # characters of one message kept in the result's transcript
MAX_CONVERSATION = 24_000  # characters of the conversation a turn's prompt carries (the latest)

SELECT_SYSTEM = "You choose the next speaker of a group chat. Answer with the name of one participant and nothing else."
SUMMARY_SYSTEM = (
    "You summarise the conversation of a team of agents working on a task: give the final "
    "answer or result they reached, concisely, without commentary on the conversation."
)


@dataclass
class Entry:
    """One message of the conversation."""

    speaker: str
    content: str
    role: str = "assistant"  # user (the human or the task) | assistant
    agent_type: str = ""
    task_id: str = ""
    turn: int = 0
    ts_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        content = self.content if len(self.content) <= MAX_ENTRY else self.content[:MAX_ENTRY] + "\n[... cut ...]"
        return {
            "speaker": self.speaker,
            "content": content,
            "role": self.role,
            "agent_type": self.agent_type,
            "task_id": self.task_id,
            "turn": self.turn,
            "ts_ms": self.ts_ms,
        }


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ms else ""


def short(text: str, n: int = 160) -> str:
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


def conversation(entries: list[Entry], limit: int = MAX_CONVERSATION) -> str:
    text = "\n\n".join(f"[{e.speaker}]: {e.content.strip()}" for e in entries)
    return text if len(text) <= limit else "[... earlier messages cut ...]\n" + text[-limit:]


def roster(participants: list[Participant]) -> str:
    return "\n".join(
        f"- {p.name}: {p.description or ('the user' if p.is_user else 'a ' + p.type + ' agent')}" for p in participants
    )


def sequential_prompt(task: str, p: Participant, before: list[Entry]) -> str:
    out = f"Task: {task}"
    if before:
        out += "\n\nThe previous agents' outputs:\n\n" + conversation(before)
    role = f" ({p.description})" if p.description else ""
    return out + f"\n\nYou are {p.name}{role}. Do your part of the task."


def autonomous_prompt(task: str, p: Participant) -> str:
    role = f" ({p.description})" if p.description else ""
    return f"Task: {task}\n\nYou are {p.name}{role}. Work on the task on your own and give your result."


def chat_prompt(wf: Workflow, task: str, p: Participant, entries: list[Entry], turn: int) -> str:
    role = f" ({p.description})" if p.description else ""
    others = ", ".join(x.name for x in wf.participants if x.name != p.name)
    end = f" When the task is complete, end your message with {wf.termination}." if wf.may_end(p) else ""
    return (
        f"Task: {task}\n\nA group chat between {p.name} and {others}. Conversation so far:\n\n"
        f"{conversation(entries)}\n\nThis is turn {turn} of at most {wf.max_rounds}. You are {p.name}{role}. "
        f"Write your next message.{end}"
    )


def user_question(entries: list[Entry], ending: str = "") -> str:
    last = next((e for e in reversed(entries) if e.role != "user" or e.turn), None)
    said = f"{last.speaker} said: {short(last.content, 600)}\n\n" if last is not None else ""
    if ending:
        return f"{said}The conversation is ending ({ending}). Reply to go on, or leave it empty to end it."
    return f"{said}Your reply (empty: pass; exit: end the conversation):"


def select_prompt(wf: Workflow, candidates: list[Participant], entries: list[Entry], task: str) -> str:
    return (
        f"Task: {task}\n\nParticipants:\n{roster(candidates)}\n\nConversation so far:\n\n"
        f"{conversation(entries)}\n\nWho speaks next? Answer with one of: "
        f"{', '.join(p.name for p in candidates)}."
    )


def pick_speaker(answer: str, candidates: list[Participant]) -> Participant | None:
    """The participant a selector's answer names: the whole answer, else the earliest name in it."""
    a = answer.strip().strip("`'\".*").strip()
    for p in candidates:
        if a.lower() == p.name.lower():
            return p
    best: tuple[int, Participant] | None = None
    for p in candidates:
        m = re.search(rf"(?<![\w-]){re.escape(p.name)}(?![\w-])", answer, re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), p)
    return best[1] if best else None


def terminated(text: str, phrase: str) -> bool:
    return bool(phrase) and phrase in text


def strip_phrase(text: str, phrase: str) -> str:
    return text.replace(phrase, "").strip() if phrase else text.strip()


@dataclass
class Tally:
    """Usage per agent and model: ``{total_cost, <model>: {cost, prompt_tokens, completion_tokens,
    total_tokens}}`` for each agent and for the whole run."""

    by_agent: dict[str, dict[str, Usage]] = field(default_factory=dict)

    def add(self, agent: str, usage: Usage) -> None:
        if not (usage.calls or usage.prompt_tokens or usage.completion_tokens or usage.cost_usd):
            self.by_agent.setdefault(agent, {})
            return
        self.by_agent.setdefault(agent, {}).setdefault(usage.model or "unknown", Usage()).add(usage)

    @staticmethod
    def _shape(models: dict[str, Usage]) -> dict[str, Any]:
        out: dict[str, Any] = {"total_cost": round(sum(u.cost_usd for u in models.values()), 6)}
        for m, u in sorted(models.items()):
            out[m] = {
                "cost": round(u.cost_usd, 6),
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            }
        return out

    def summary(self, started_ms: int, finished_ms: int) -> dict[str, Any]:
        total: dict[str, Usage] = {}
        for models in self.by_agent.values():
            for m, u in models.items():
                total.setdefault(m, Usage(model=m)).add(u)
        return {
            "start_time": iso(started_ms),
            "end_time": iso(finished_ms),
            "duration_s": round((finished_ms - started_ms) / 1000, 3),
            "total": self._shape(total),
            "agents": {a: self._shape(models) for a, models in self.by_agent.items()},
        }
