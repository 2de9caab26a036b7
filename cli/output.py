"""Where the CLI writes: plain streams (one-shot), JSON lines, or above the prompt.

Handlers call `record(kind, data, lines)` for their result: JSON mode prints
``{"type": kind, **data}`` on stdout, the others print the lines. `info` and
`error` are side notes: stderr in one-shot mode, above the prompt in the REPL.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .render import EventRenderer, Line, event_json, plain


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

    def event(self, renderer: EventRenderer, ev: Any) -> None:
        self.lines(renderer.feed(ev))

    def flush_task(self, renderer: EventRenderer) -> None:
        self.lines(renderer.flush())


class StreamOutput(Output):
    """One-shot mode: plain text (or JSON lines) on stdout, notes on stderr."""

    def __init__(
        self, stdout: TextIO | None = None, stderr: TextIO | None = None, json_mode: bool = False
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.json_mode = json_mode

    def _write(self, stream: TextIO, lines: list[Line]) -> None:
        if lines:
            stream.write("".join(plain(line) + "\n" for line in lines))
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

    def event(self, renderer: EventRenderer, ev: Any) -> None:
        if self.json_mode:
            self.json(event_json(ev, renderer.label.agent_type))
        else:
            self._write(self.stdout, renderer.feed(ev))

    def flush_task(self, renderer: EventRenderer) -> None:
        if not self.json_mode:
            self._write(self.stdout, renderer.flush())
