"""The command-line grammar.

    /<agent> <action> [options] [input] [| language] [options]
    /<meta-command> [arguments]

* ``agent``: a built-in type, an alias (man, arch, back, front, design, opt,
  mail) or a type from the live registry; case-insensitive.
* ``action``: create, run, terminate or status (case-insensitive).
* ``input``: bare words (joined by single spaces) or a quoted string
  (``"..."`` with ``\\"`` and ``\\\\`` escapes, or ``'...'`` verbatim).
* ``| language``: one word, default python. A ``|`` inside quotes is text.
* options, anywhere after the action, unquoted: ``--approve`` (ask before each
  tool call), ``-o KEY=VALUE`` / ``--option KEY=VALUE`` (repeatable, passed to
  the agent), ``--id TASK_ID`` (idempotency key). ``--`` ends the options:
  what follows is input even when it starts with ``--``.

The tokenizer never fails (the lexer and the completer use it on partial
lines); `parse` raises ParseError with one line naming the problem and
showing the right form.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from orchgpt.models import Action, Command

from . import agents
from .errors import ParseError

FORM = "/<agent> <action> [input] [| language]"
LANGUAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+#._-]{0,31}$")
OPTION_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Token:
    kind: str  # "word" or "pipe"
    value: str  # the text with quotes and escapes removed
    start: int
    end: int
    quoted: bool = False  # some part of the word was quoted
    unclosed_quote: int = -1  # column (0-based) of a quote that is never closed
    quote_char: str = ""  # the unclosed quote: ' or "

    @property
    def closed(self) -> bool:
        return self.unclosed_quote < 0


def tokenize(line: str) -> list[Token]:
    """Split a line into words and pipes, shell-like; never raises."""
    tokens: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
            continue
        if c == "|":
            tokens.append(Token("pipe", "|", i, i + 1))
            i += 1
            continue
        start, quoted, unclosed, qc = i, False, -1, ""
        buf: list[str] = []
        while i < n and not line[i].isspace() and line[i] != "|":
            c = line[i]
            if c == "'":
                quoted = True
                end = line.find("'", i + 1)
                if end < 0:
                    unclosed, qc, buf, i = i, "'", [*buf, line[i + 1 :]], n
                    break
                buf.append(line[i + 1 : end])
                i = end + 1
            elif c == '"':
                quoted = True
                j = i + 1
                while j < n and line[j] != '"':
                    if line[j] == "\\" and j + 1 < n and line[j + 1] in '"\\':
                        j += 1
                    buf.append(line[j])
                    j += 1
                if j >= n:
                    unclosed, qc, i = i, '"', n
                    break
                i = j + 1
            elif c == "\\" and i + 1 < n:
                buf.append(line[i + 1])
                i += 2
            else:
                buf.append(c)
                i += 1
        tokens.append(Token("word", "".join(buf), start, i, quoted, unclosed, qc))
    return tokens


# A parsed `/<agent> <action> ...` line is the mesh's Command (orchgpt.models.Command); the old
# name stays for code that imports it.
AgentCommand = Command


@dataclass
class MetaCommand:
    """A parsed `/<meta-command> [arguments]` line."""

    name: str
    args: list[str] = field(default_factory=list)


def quote(text: str) -> str:
    """Quote `text` so that `tokenize` gives it back as one word."""
    if text and not re.search(r"[\s'\"\\|]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(agent_type: str, action: str, input: str = "", language: str = "") -> str:
    parts = [f"/{agent_type}", action]
    if input:
        parts.append(quote(input))
    if language and language != agents.DEFAULT_LANGUAGE and action in agents.INPUT_ACTIONS:
        parts += ["|", language]
    return " ".join(parts)


def _example(agent: str) -> str:
    return f'/{agent} run "fastapi app" | python'


def _check_quotes(tokens: list[Token]) -> None:
    for t in tokens:
        if not t.closed:
            q = t.quote_char
            raise ParseError(
                f"unbalanced {q} quote at column {t.unclosed_quote + 1}: close it, "
                f"e.g. /echo run {q}hello world{q} | python"
            )


def parse(line: str, *, known_types: Iterable[str] = (), meta: Collection[str] = ()) -> Command | MetaCommand | None:
    """Parse one line; None for a blank line. Raises ParseError."""
    text = line.strip()
    if not text:
        return None
    if not text.startswith("/"):
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise ParseError(f'not a command: "{shown}": commands start with "/", e.g. /echo run "hi" (/help lists them)')
    tokens = tokenize(text)
    _check_quotes(tokens)
    head = tokens[0]
    name = head.value[1:] if head.kind == "word" else ""
    if not name or head.quoted:
        raise ParseError(f"empty command: expected {FORM} or a command from /help")
    lname = name.lower()
    if lname in {m.lower() for m in meta}:
        return MetaCommand(lname, [t.value for t in tokens[1:]])
    known = list(known_types)
    agent = agents.resolve(name, known)
    if agent is None:
        raise ParseError(
            f'unknown command or agent "/{name}": expected {FORM} with an agent among '
            f"{', '.join(agents.all_types(known))}, or a command from /help"
        )
    return _parse_agent(agent, name, tokens[1:])


def _parse_agent(agent: str, typed: str, rest: list[Token]) -> Command:
    actions = "|".join(agents.ACTIONS)
    if not rest or rest[0].kind == "pipe":
        raise ParseError(f"missing action: expected /{typed} <{actions}> [input] [| language]")
    act_tok = rest[0]
    action = act_tok.value.lower()
    if action not in agents.ACTIONS or act_tok.quoted:
        raise ParseError(
            f'unknown action "{act_tok.value}" for /{typed}: expected create, run, terminate '
            f"or status, e.g. {_example(typed)}"
        )
    cmd = Command(agent, Action(action), language=agents.DEFAULT_LANGUAGE)
    words: list[str] = []
    lang_words: list[str] = []
    pipes = 0
    options_done = False
    toks = rest[1:]
    i = 0
    while i < len(toks):
        t = toks[i]
        i += 1
        if t.kind == "pipe":
            pipes += 1
            if pipes > 1:
                raise ParseError(f'more than one "|": quote the input if it contains "|", e.g. {_example(typed)}')
            continue
        v = t.value
        if not t.quoted and not options_done and v.startswith("-") and (v.startswith("--") or v == "-o"):
            if v == "--":
                options_done = True
                continue
            i = _option(cmd, t, toks, i)
            continue
        (lang_words if pipes else words).append(v)
    cmd.input = " ".join(w for w in words if w)
    if pipes:
        if not lang_words:
            raise ParseError(f'missing language after "|": e.g. {_example(typed)}')
        if len(lang_words) > 1:
            raise ParseError(
                f'one language after "|", got "{" ".join(lang_words)}": quote the input if it contains "|"'
            )
        if not LANGUAGE_RE.match(lang_words[0]):
            raise ParseError(f'invalid language "{lang_words[0]}": expected a name like python or typescript')
        cmd.language = lang_words[0].lower()
    if action in agents.INPUT_ACTIONS and not cmd.input.strip():
        raise ParseError(f"missing input: /{typed} {action} needs one, e.g. {_example(typed)}")
    return cmd


def _option(cmd: Command, t: Token, toks: list[Token], i: int) -> int:
    """Apply the option token `t`; returns the index after its value."""
    name, eq, inline = t.value.partition("=")

    def value(example: str) -> tuple[str, int]:
        if eq:
            return inline, i
        if i < len(toks) and toks[i].kind == "word":
            return toks[i].value, i + 1
        raise ParseError(f"option {name} needs {example}")

    if name == "--approve" and not eq:
        cmd.approval = True
        return i
    if name in ("-o", "--option"):
        kv, nxt = value("KEY=VALUE, e.g. -o delay=2")
        key, sep, val = kv.partition("=")
        if not sep or not OPTION_KEY_RE.match(key):
            raise ParseError(f'option {name} needs KEY=VALUE, e.g. -o delay=2 (got "{kv}")')
        cmd.options[key] = val
        return nxt
    if name == "--id":
        tid, nxt = value("a task id, e.g. --id build-42")
        if not tid:
            raise ParseError("option --id needs a task id, e.g. --id build-42")
        cmd.task_id = tid
        return nxt
    raise ParseError(
        f'unknown option "{t.value}": use --approve, -o KEY=VALUE or --id TASK_ID '
        '(put -- before input that starts with "-")'
    )


def needs_registry(text: str, meta: Collection[str] = ()) -> bool:
    """Does the line name an agent type that only the live registry can know?"""
    toks = tokenize(text.strip())
    if not toks or toks[0].kind != "word" or not toks[0].value.startswith("/"):
        return False
    name = toks[0].value[1:]
    low = {m.lower() for m in meta}
    return bool(name) and name.lower() not in low and agents.resolve(name) is None
