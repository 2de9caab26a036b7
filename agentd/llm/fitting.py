"""Keeping a history inside the context window: drop the oldest exchanges, then cut long messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .compat import _text

Count = Callable[[list[dict[str, Any]]], Awaitable[int]]
Summariser = Callable[[list[dict[str, Any]]], Awaitable[str]]


def _groups(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Messages in units that must stay together: a tool-calling assistant message and its results."""
    groups: list[list[dict[str, Any]]] = []
    for m in messages:
        if m.get("role") == "tool" and groups and (groups[-1][0].get("tool_calls")):
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def cut_middle(text: str, keep_chars: int) -> str:
    if len(text) <= keep_chars:
        return text
    keep_chars = max(keep_chars, 80)
    head = keep_chars * 2 // 3
    tail = keep_chars - head
    return (
        f"{text[:head]}\n[... {len(text) - head - tail} characters cut to fit the context window ...]\n{text[-tail:]}"
    )


async def fit_messages(
    messages: list[dict[str, Any]],
    budget: int,
    count: Count,
    chars_per_token: float,
    summarise: Summariser | None = None,
) -> list[dict[str, Any]]:
    msgs = [dict(m) for m in messages]
    if await count(msgs) <= budget:
        return msgs
    # The head stays: leading system messages and the first user message (the task).
    i = 0
    while i < len(msgs) and msgs[i].get("role") == "system":
        i += 1
    if i < len(msgs) and msgs[i].get("role") == "user":
        i += 1
    head, groups = msgs[:i], _groups(msgs[i:])
    note_reserve = 64 if summarise is None else 400
    kept: list[list[dict[str, Any]]] = []
    used = await count(head) + note_reserve
    for g in reversed(groups):
        n = await count(g) - 3  # count() adds the reply header once per call
        if kept and used + n > budget:
            break
        kept.insert(0, g)
        used += n
    dropped = [m for g in groups[: len(groups) - len(kept)] for m in g]
    out = list(head)
    if dropped:
        text = ""
        if summarise is not None:
            try:
                text = await summarise(dropped)
            except Exception:  # a failed summary must not fail the task: fall back to the note
                text = ""
        note = (
            f"[Summary of {len(dropped)} earlier messages, omitted to fit the context window]\n{text}"
            if text
            else f"[{len(dropped)} earlier messages were omitted to fit the context window.]"
        )
        out.append({"role": "user", "content": note})
    out += [m for g in kept for m in g]
    # Still too long (a huge task or tool output): cut the longest messages in the middle.
    for _ in range(12):
        over = await count(out) - budget
        if over <= 0:
            break
        longest = max(range(len(out)), key=lambda k: len(_text(out[k].get("content"))))
        text = _text(out[longest].get("content"))
        if len(text) <= 200:
            break
        target = max(len(text) - int(over * chars_per_token * 1.2) - 120, len(text) // 4, 100)
        out[longest] = {**out[longest], "content": cut_middle(text, target)}
    return out
