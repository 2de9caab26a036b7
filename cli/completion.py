"""Completion of commands, agent types (live from the registry), actions, options, ids."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from . import agents, registry
from .grammar import tokenize
from .render import one_line, short_id

if TYPE_CHECKING:
    from .context import Context

OPTIONS = {
    "--approve": "ask before each tool call",
    "-o": "KEY=VALUE option for the agent",
    "--id": "your own task id (idempotent)",
    "--": "the rest is input",
}


def _matches(word: str, candidates: Iterable[tuple[str, str]], start: int) -> Iterator[Completion]:
    low = word.lower()
    for text, meta in candidates:
        if text.lower().startswith(low):
            yield Completion(text, start_position=start, display_meta=meta)


class CommandCompleter(Completer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not text.lstrip().startswith("/"):
            return
        tokens = tokenize(text)
        at_space = text[-1].isspace()
        if tokens and not at_space and not tokens[-1].closed:
            return  # inside a quoted string
        word = "" if at_space or not tokens or tokens[-1].kind == "pipe" else tokens[-1].value
        index = len(tokens) if at_space or (tokens and tokens[-1].kind == "pipe") else len(tokens) - 1
        start = -len(word) if not at_space and tokens and tokens[-1].kind == "word" else 0
        if index == 0:
            yield from _matches(word, self.heads(), start)
            return
        head = tokens[0].value[1:].lower()
        spec = registry.lookup(head)
        if spec is not None:
            if spec.name == "workflow" and index in (1, 2):  # /workflow run|show NAME
                names = ((n, "workflow") for n in self.ctx.workflow_names)
                yield from _matches(
                    word, (("run", "run it on a task"), ("show", "its definition")) if index == 1 else names, start
                )
                return
            if index == 1 or spec.name in ("publish", "approve", "cancel"):
                yield from _matches(word, self.arguments(spec.complete, index), start)
            return
        if agents.resolve(head, self.ctx.known_types()) is None:
            return
        if index == 1:
            yield from _matches(word, agents.ACTIONS.items(), start)
            return
        before = [t for t in tokens[:index]]
        if any(t.kind == "pipe" for t in before):
            if word.startswith("-"):
                yield from _matches(word, OPTIONS.items(), start)
            else:
                yield from _matches(word, ((lang, "language") for lang in agents.LANGUAGES), start)
        elif word.startswith("-"):
            yield from _matches(word, OPTIONS.items(), start)

    def heads(self) -> Iterator[tuple[str, str]]:
        for spec in registry.specs():
            if self.ctx.interactive or not spec.repl_only:
                yield f"/{spec.name}", spec.help
        for t in self.ctx.known_types():
            yield f"/{t}", self._describe(t)

    def _describe(self, agent_type: str) -> str:
        if agent_type in agents.BUILTIN_TYPES:
            return agents.BUILTIN_TYPES[agent_type]
        if agent_type in self.ctx.declared:
            return self.ctx.declared[agent_type] or "declared agent type"
        return "remote agent type"

    def arguments(self, kind: str, index: int) -> Iterator[tuple[str, str]]:
        ctx = self.ctx
        if kind == "task" and index == 1:
            seen = set()
            for v in reversed(list(ctx.views.values())):
                seen.add(v.task_id)
                yield v.short, f"{v.agent_type} {v.state}: {one_line(v.input, 30)}"
            for tid in ctx.recent_tasks:
                if tid not in seen:
                    seen.add(tid)
                    yield short_id(tid), "task"
        elif kind == "session" and index == 1:
            yield ".", "this session"
            for sid in ctx.recent_sessions:
                yield short_id(sid), "session"
        elif kind == "agent":
            for t in ctx.known_types():
                yield t, self._describe(t)
        elif kind == "command":
            for spec in registry.specs():
                yield spec.name, spec.help
