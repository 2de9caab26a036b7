"""A session's transcript: the messages the store keeps for each finished command.

A command the user gave (a root task) becomes its messages when it finishes: the user's input,
then the answer (its output, or its error). A workflow's result carries its transcript
(``data["transcript"]``, JSON: one entry per turn with the speaker) and its summary; each turn
becomes a message. Message ids are derived from the task id and the place in the transcript,
so a task finished twice (a late result after a crash) records nothing twice. Users delete
messages (``/history delete``), clear a session or delete it (orchgpt/servicer_workflows.py).
"""

from __future__ import annotations

import json

from . import logs
from .errors import StoreError
from .models import SessionMessage, Task, TaskState, now_ms
from .store import Store

log = logs.get("orchgpt.transcripts")

MAX_CONTENT = 64 * 1024  # per message: a transcript is for reading, the result keeps the rest


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "\n[... cut ...]"


def messages_for(t: Task) -> list[SessionMessage]:
    """The messages of a finished root task (none for a sub-task: its parent speaks for it)."""
    r = t.result
    if t.parent_task_id or r is None or not t.session_id:
        return []

    def msg(n: int, speaker: str, role: str, content: str, ts: int) -> SessionMessage:
        return SessionMessage(f"{t.task_id}:{n}", t.session_id, t.task_id, speaker, role, _cut(content), ts, n)

    out = [msg(0, t.submitted_by or "user", "user", t.input, t.created_ms)]
    end = t.updated_ms or now_ms()
    turns: list[dict[str, object]] = []
    raw = r.data.get("transcript", "")
    if raw:
        try:
            loaded = json.loads(raw)
            turns = [x for x in loaded if isinstance(x, dict)] if isinstance(loaded, list) else []
        except ValueError:
            log.warning("transcript_unreadable", task_id=t.task_id)
    for i, turn in enumerate(turns, 1):
        ts = turn.get("ts_ms")
        out.append(
            msg(
                i,
                str(turn.get("speaker", "")),
                str(turn.get("role", "assistant")),
                str(turn.get("content", "")),
                ts if isinstance(ts, int) else end,
            )
        )
    n = len(turns) + 1
    if turns:
        summary = r.data.get("summary", "")
        if summary and r.data.get("summary_method", "") not in ("", "none", "last"):
            out.append(msg(n, "summary", "summary", summary, end))
    elif r.state == TaskState.SUCCEEDED:
        out.append(msg(n, t.agent_type, "assistant", r.output, end))
    else:
        out.append(msg(n, t.agent_type, "assistant", f"({r.state}) {r.error or r.output}", end))
    return out


def record(store: Store, t: Task) -> None:
    """Store the task's messages; a store that cannot keep them logs it (the task is done)."""
    try:
        msgs = messages_for(t)
        if msgs:
            store.add_session_messages(msgs)
    except StoreError as exc:
        log.error("store_write_failed", what="session messages", task_id=t.task_id, error=str(exc))
