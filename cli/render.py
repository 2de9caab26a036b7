"""Task events and tables as lines of styled text, plain text or JSON objects.

A `Line` is a list of (style, text) fragments (prompt-toolkit's formatted
text); `plain(line)` drops the styles. Nothing here imports prompt-toolkit or
gRPC, so one-shot mode and tests use it cheaply.

JSON (``--json``): one object per line. Task events are
``{"type": "event", "kind", "task_id", "seq", "state", "text", "agent_type",
"agent_id", "parent_task_id", "ts_ms", "data", "artifact", "approval",
"result"}`` with every key always present (null when it does not apply);
meta commands print ``{"type": "<command>", ...}`` (see meta.py).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchgpt.checks import Check, checks_of
from orchgpt.models import (
    ApprovalEvent,
    ArtifactEvent,
    LogEvent,
    ResultEvent,
    StatusEvent,
    StepEvent,
    TokenEvent,
)
from orchgpt.wire import dicts

if TYPE_CHECKING:
    from orchgpt.models import ApprovalRequest, Artifact, TaskEvent, TaskResult, Usage

Line = list[tuple[str, str]]

TASK_COLOURS = 6
TOKEN_WRAP = 100  # flush streamed tokens at a space once a line is this long

# prompt-toolkit style rules (the REPL builds a Style from them).
STYLE: dict[str, str] = {
    **{
        f"task.{i}": c
        for i, c in enumerate(
            [
                "ansicyan bold",
                "ansimagenta bold",
                "ansiyellow bold",
                "ansiblue bold",
                "ansigreen bold",
                "ansibrightred bold",
            ]
        )
    },
    "state.ok": "ansigreen bold",
    "state.fail": "ansired bold",
    "state.cancel": "ansiyellow bold",
    "state.run": "ansicyan",
    "log": "ansibrightblack",
    "step": "ansiblue",
    "artifact": "ansimagenta",
    "approval": "ansiyellow bold",
    "output": "",
    "error": "ansired",
    "info": "ansibrightblack",
    "ok": "ansigreen",
    "head": "bold underline",
    # the command line (lexer.py)
    "cmd.meta": "ansigreen bold",
    "cmd.agent": "ansicyan bold",
    "cmd.unknown": "ansired",
    "cmd.action": "ansiyellow",
    "cmd.badaction": "ansired underline",
    "cmd.string": "ansigreen",
    "cmd.option": "ansimagenta",
    "cmd.pipe": "bold",
    "cmd.language": "ansiblue",
    "cmd.error": "bg:ansired ansiwhite",
    # the prompt and its toolbar (repl.py, toolbar.py)
    "prompt": "bold",
    "prompt.question": "ansiyellow bold",
    "bottom-toolbar": "noreverse bg:#262626 #d0d0d0",
    "toolbar.ok": "bg:#262626 ansigreen bold",
    "toolbar.bad": "bg:#262626 ansired bold",
    "toolbar.dim": "bg:#262626 #8a8a8a",
}


def plain(line: Line) -> str:
    return "".join(t for _, t in line)


def short_id(task_id: str) -> str:
    return task_id[:8]


def colour_of(task_id: str) -> str:
    return f"task.{sum(task_id.encode()) % TASK_COLOURS}"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def age(ms: int, now_ms: int | None = None) -> str:
    """'5s ago', '3m ago', '2h ago', else a date."""
    if not ms:
        return "-"
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    s = max(0, (now - ms) // 1000)
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return timestamp(ms)


def timestamp(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def usage_text(u: Usage | None) -> str:
    if u is None or not (u.total_tokens or u.cost_usd or u.calls):
        return ""
    parts = [f"{u.total_tokens} tokens"]
    if u.cost_usd:
        parts.append(f"${u.cost_usd:.4f}")
    if u.model:
        parts.append(u.model)
    return ", ".join(parts)


def one_line(text: str, width: int = 60) -> str:
    t = " ".join(text.split())
    return t if len(t) <= width else t[: width - 3] + "..."


def state_style(state: str) -> str:
    return {"succeeded": "state.ok", "failed": "state.fail", "cancelled": "state.cancel"}.get(state, "state.run")


@dataclass
class TaskLabel:
    """How a task's lines are marked: `[echo 3f2a9c1b]` in the task's colour."""

    task_id: str
    agent_type: str

    def tag(self) -> tuple[str, str]:
        return (colour_of(self.task_id), f"[{self.agent_type} {short_id(self.task_id)}]")


@dataclass
class EventRenderer:
    """Turns one task's events into lines; streamed tokens become whole lines."""

    label: TaskLabel
    fancy: bool = False  # symbols for the REPL
    prefix_output: bool = True  # mark result output lines with the task tag
    started: float = field(default_factory=time.monotonic)
    tokens: str = ""  # not yet printed
    streamed: str = ""  # everything streamed, to avoid printing the output twice
    shown: set[str] = field(default_factory=set)  # artifacts already shown (ARTIFACT events)

    def _line(self, *frags: tuple[str, str]) -> Line:
        return [self.label.tag(), ("", " "), *frags]

    def feed(self, ev: TaskEvent) -> list[Line]:
        if isinstance(ev, TokenEvent):
            return self._tokens(ev.text)
        out = self.flush()
        if isinstance(ev, StatusEvent):
            state = str(ev.state) if ev.state is not None else "running"
            text = ev.text
            if text.split(" ", 1)[0].lower() == state:  # "queued for echo": say it once
                frags = [(state_style(state), text[: len(state)]), ("", text[len(state) :])]
            else:
                frags = [(state_style(state), state)] + ([("", f": {text}")] if text else [])
            out.append(self._line(*frags))
        elif isinstance(ev, LogEvent):
            out += [self._line(("log", t)) for t in (ev.text.splitlines() or [""])]
        elif isinstance(ev, StepEvent):
            out.append(self._line(("step", f"step: {ev.text}")))
        elif isinstance(ev, ArtifactEvent):
            if ev.artifact is not None:
                self.shown.add(ev.artifact.path)
            out.append(self._line(("artifact", artifact_text(ev.artifact, ev.text))))
        elif isinstance(ev, ApprovalEvent):
            out.append(self._line(("approval", approval_text(ev.approval, ev.text))))
        elif isinstance(ev, ResultEvent) and ev.result is not None:
            out += self.result(ev.result)
        elif ev.text:
            out.append(self._line(("", ev.text)))
        return out

    def _tokens(self, text: str) -> list[Line]:
        self.tokens += text
        self.streamed += text
        out: list[Line] = []
        while "\n" in self.tokens:
            head, self.tokens = self.tokens.split("\n", 1)
            out.append(self._line(("output", head)))
        if len(self.tokens) >= TOKEN_WRAP:
            cut = self.tokens.rfind(" ", 0, TOKEN_WRAP)
            cut = cut if cut > 0 else TOKEN_WRAP
            out.append(self._line(("output", self.tokens[:cut])))
            self.tokens = self.tokens[cut:].lstrip(" ")
        return out

    def flush(self) -> list[Line]:
        if not self.tokens.strip():
            self.tokens = ""
            return []
        line, self.tokens = self._line(("output", self.tokens.rstrip())), ""
        return [line]

    def result(self, r: TaskResult) -> list[Line]:
        out: list[Line] = []
        output = r.output.rstrip("\n")
        if output and output.strip() != self.streamed.strip():
            for text in output.splitlines():
                out.append(self._line(("output", text)) if self.prefix_output else [("output", text)])
        for line in checks_table(checks_of(r)):
            out.append(self._line(*line) if self.prefix_output else line)
        state = str(r.state)
        sym = {"succeeded": "✓ ", "failed": "✗ ", "cancelled": "⊘ "}.get(state, "") if self.fancy else ""
        frags: list[tuple[str, str]] = [(state_style(state), f"{sym}{state}")]
        if r.error and state != "succeeded":
            frags.append(("error", f": {r.error}"))
        extra = [f"{time.monotonic() - self.started:.1f}s"]
        if u := usage_text(r.usage):
            extra.append(u)
        if r.artifacts:
            extra.append(f"{len(r.artifacts)} artifact{'s' if len(r.artifacts) != 1 else ''}")
            if total := sum(a.size for a in r.artifacts):
                extra.append(human_size(total))
        frags.append(("info", f" ({', '.join(extra)})"))
        out.append(self._line(*frags))
        return out + self._result_artifacts(r)

    def _result_artifacts(self, r: TaskResult, limit: int = 20) -> list[Line]:
        """The result's files with their sizes, those not shown already as ARTIFACT events."""
        rest = [a for a in r.artifacts if a.path not in self.shown]
        out = [self._line(("artifact", artifact_text(a))) for a in rest[:limit]]
        if len(rest) > limit:
            out.append(self._line(("artifact", f"... and {len(rest) - limit} more (/task {r.task_id})")))
        return out


def checks_table(checks: Sequence[Check], width: int = 120) -> list[Line]:
    """A result's checks (name, tool, outcome, detail) as a table; no lines when it has none."""
    if not checks:
        return []
    rows = [
        [c.name, c.tool, c.outcome + ("" if c.required or not c.failed else " (advisory)"), c.detail] for c in checks
    ]
    return table(["CHECK", "TOOL", "OUTCOME", "DETAIL"], rows, width)


def artifact_text(a: Artifact | None, fallback: str = "") -> str:
    if a is None:
        return f"artifact: {fallback}"
    bits = [human_size(a.size)] + ([a.kind] if a.kind else [])
    return f"artifact: {a.path} ({', '.join(bits)})"


def approval_text(a: ApprovalRequest | None, fallback: str = "") -> str:
    if a is None:
        return f"approval needed: {fallback}"
    what = a.summary or one_line(a.arguments_json, 80)
    return f"approval needed: {a.tool}: {what}"


# ---- JSON


def result_json(r: TaskResult | None) -> dict[str, Any] | None:
    """orchgpt.wire.dicts' form of a result, with the derived usage.total_tokens."""
    if r is None:
        return None
    d = dicts.result_to_dict(r)
    d["usage"]["total_tokens"] = r.usage.total_tokens
    return d


def event_json(ev: TaskEvent, agent_type: str = "") -> dict[str, Any]:
    """orchgpt.wire.dicts' form of an event (every key), tagged ``"type": "event"``; the result
    as ``result_json``; ``agent_type``: the task's, when the caller knows it better."""
    d = dicts.event_to_dict(ev)
    d["agent_type"] = agent_type or ev.agent_type
    d["result"] = result_json(ev.result)
    return {"type": "event", **d}


# ---- tables


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], width: int = 120) -> list[Line]:
    """Columns padded to their widest cell; the last column is cut to fit `width`."""
    body = [[str(c) for c in r] for r in rows]
    widths = [len(c) for c in columns]
    for r in body:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c))
    fixed = sum(widths[:-1]) + 2 * (len(columns) - 1)
    last = max(10, width - fixed)

    def fmt(cells: Sequence[str]) -> str:
        head = "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells[:-1]))
        tail = cells[-1] if len(cells[-1]) <= last else cells[-1][: last - 3] + "..."
        return (head + "  " + tail).rstrip() if head else tail

    lines: list[Line] = [[("head", fmt(list(columns)))]]
    lines += [[("", fmt(r))] for r in body]
    return lines
