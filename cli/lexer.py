"""Highlighting of the command line as it is typed (a prompt-toolkit Lexer)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.lexers import Lexer

from . import agents
from .grammar import tokenize

Fragments = StyleAndTextTuples
OPTIONS_WITH_VALUE = frozenset({"-o", "--option", "--id"})


def highlight(line: str, known_types: Iterable[str] = (), meta: Iterable[str] = ()) -> Fragments:
    """Style classes for one line: meta command, agent, action, string, option, pipe, language."""
    if not line.lstrip().startswith("/"):
        return [("", line)]
    tokens = tokenize(line)
    frags: Fragments = []
    pos = 0
    kind = ""
    after_pipe = False
    expect_value = False
    for i, t in enumerate(tokens):
        if t.start > pos:
            frags.append(("", line[pos : t.start]))
        text = line[t.start : t.end]
        pos = t.end
        if i == 0:
            name = t.value[1:]
            if name.lower() in {m.lower() for m in meta}:
                kind, style = "meta", "class:cmd.meta"
            elif name and agents.resolve(name, known_types) is not None:
                kind, style = "agent", "class:cmd.agent"
            else:
                kind, style = "unknown", "class:cmd.unknown"
        elif t.kind == "pipe":
            after_pipe, style = True, "class:cmd.pipe"
        elif kind == "agent" and i == 1:
            ok = t.value.lower() in agents.ACTIONS and not t.quoted
            style = "class:cmd.action" if ok else "class:cmd.badaction"
        elif expect_value:
            expect_value, style = False, "class:cmd.option"
        elif (
            kind == "agent"
            and not t.quoted
            and t.value.startswith("-")
            and (t.value.startswith("--") or t.value == "-o")
        ):
            expect_value = t.value in OPTIONS_WITH_VALUE
            style = "class:cmd.option"
        elif after_pipe:
            style = "class:cmd.language"
        elif t.quoted:
            style = "class:cmd.string"
        else:
            style = ""
        if not t.closed:
            q = t.unclosed_quote
            frags += [
                (style, line[t.start : q]),
                ("class:cmd.error", line[q]),
                ("class:cmd.string", line[q + 1 : t.end]),
            ]
            frags = [f for f in frags if f[1]]
        else:
            frags.append((style, text))
    if pos < len(line):
        frags.append(("", line[pos:]))
    return frags


class CommandLexer(Lexer):
    def __init__(self, known_types: Callable[[], Iterable[str]], meta: Callable[[], Iterable[str]]) -> None:
        self.known_types = known_types
        self.meta = meta

    def lex_document(self, document: Document) -> Callable[[int], Fragments]:
        lines = document.lines
        if not any(line.lstrip().startswith("/") for line in lines):
            return lambda lineno: [("", lines[lineno])] if lineno < len(lines) else []
        known = list(self.known_types())
        meta = list(self.meta())  # (imports the meta commands at the first "/")

        def get_line(lineno: int) -> Fragments:
            return highlight(lines[lineno], known, meta) if lineno < len(lines) else []

        return get_line
