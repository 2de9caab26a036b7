"""Where the CLI writes: plain streams (one-shot), JSON lines, or above the prompt.

Handlers call `record(kind, data, lines)` for their result: JSON mode prints
``{"type": kind, **data}`` on stdout, the others print the lines. `info` and
`error` are side notes: stderr in one-shot mode, above the prompt in the REPL.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from orchgpt.models import TaskEvent

from .render import STYLE, EventRenderer, Line, event_json, plain


class Output:
    json_mode = False

    def lines(self, lines: list[Line]) -> None:
        raise NotImplementedError

    def info(self, text: str, style: str = "info") -> None:
        self.lines([[(style, text)]])

    def error(self, text: str) -> None:
        self.lines([[("error", f"error: {text}")]])

    def record(self, kind: str, data: dict[str, Any], lines: list[Line]) -> None:
        self.lines(lines)

    def event(self, renderer: EventRenderer, ev: TaskEvent) -> None:
        self.lines(renderer.feed(ev))

    def flush_task(self, renderer: EventRenderer) -> None:
        self.lines(renderer.flush())


SGR = {
    "bold": "1",
    "underline": "4",
    **{
        f"ansi{name}": str(30 + i)
        for i, name in enumerate(["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"])
    },
    **{
        f"ansibright{name}": str(90 + i)
        for i, name in enumerate(["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"])
    },
}


def ansi(line: Line) -> str:
    """A line with ANSI colours from the STYLE rules (foreground colours, bold, underline)."""
    out = []
    for style, text in line:
        codes = [SGR[w] for w in STYLE.get(style, "").split() if w in SGR] if style else []
        out.append(f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes and text else text)
    return "".join(out)


def wants_colour(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM=dumb."""
    import os

    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class StreamOutput(Output):
    """One-shot mode: plain text (or JSON lines) on stdout, notes on stderr; colours on a terminal."""

    def __init__(
        self,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        json_mode: bool = False,
        colour: bool | None = None,
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.json_mode = json_mode
        self.colour = (wants_colour(self.stdout) and not json_mode) if colour is None else colour

    def _write(self, stream: TextIO, lines: list[Line]) -> None:
        if lines:
            fmt = ansi if self.colour and stream is self.stdout else plain
            stream.write("".join(fmt(line) + "\n" for line in lines))
            stream.flush()

    def lines(self, lines: list[Line]) -> None:
        self._write(self.stderr if self.json_mode else self.stdout, lines)

    def info(self, text: str, style: str = "info") -> None:
        self._write(self.stderr, [[(style, text)]])

    def error(self, text: str) -> None:
        self._write(self.stderr, [[("error", f"autogpt: {text}")]])

    def json(self, obj: dict[str, Any]) -> None:
        import json

        self.stdout.write(json.dumps(obj, ensure_ascii=False, sort_keys=False) + "\n")
        self.stdout.flush()

    def record(self, kind: str, data: dict[str, Any], lines: list[Line]) -> None:
        if self.json_mode:
            self.json({"type": kind, **data})
        else:
            self._write(self.stdout, lines)

    def event(self, renderer: EventRenderer, ev: TaskEvent) -> None:
        if self.json_mode:
            self.json(event_json(ev, renderer.label.agent_type))
        else:
            self._write(self.stdout, renderer.feed(ev))

    def flush_task(self, renderer: EventRenderer) -> None:
        if not self.json_mode:
            self._write(self.stdout, renderer.flush())
