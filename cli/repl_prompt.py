"""The REPL's prompt-toolkit parts: the history file (one it cannot read or write is reported
once, and the session goes on in memory), Tab completion that opens the menu, and the output
printed above the prompt (cli.repl re-exports history_path and PromptOutput)."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

from .errors import CliError
from .output import Output
from .render import STYLE, Line, plain

HISTORY_FILE = "autogpt_history"


def history_path(flag: str | None = None) -> Path:
    """--history, else ORCHGPT_CLI_HISTORY, else the user data directory."""
    raw = flag or os.environ.get("ORCHGPT_CLI_HISTORY")
    if raw:
        path = Path(raw).expanduser()
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("orchgpt", appauthor=False)) / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create the directory of the history file {path}: {exc.strerror}") from None
    return path


def safe_file_history(path: Path, out: Output) -> Any:
    """A FileHistory that reports a file it cannot read or write once, and goes on in memory."""
    from prompt_toolkit.history import FileHistory

    class SafeFileHistory(FileHistory):
        failed = False

        def _fail(self, exc: OSError) -> None:
            if not self.failed:
                self.failed = True
                out.error(f"history file {path}: {exc.strerror or exc}; keeping this session's history in memory")

        def load_history_strings(self) -> Any:
            try:
                yield from super().load_history_strings()
            except OSError as exc:
                self._fail(exc)

        def store_string(self, string: str) -> None:
            if self.failed:
                return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                super().store_string(string)
            except OSError as exc:
                self._fail(exc)

    return SafeFileHistory(str(path))


def tab_bindings(completer: Any) -> Any:
    """Tab completes at once when there is one completion, even before the menu is computed
    (a fast typist's Tab would otherwise be lost while completion runs in the background)."""
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.key_binding import KeyBindings

    kb = KeyBindings()

    @kb.add("tab")
    def _tab(event: Any) -> None:
        b = event.current_buffer
        if b.complete_state:
            b.complete_next()
            return
        found = list(completer.get_completions(b.document, CompleteEvent(completion_requested=True)))
        if len(found) == 1:
            b.apply_completion(found[0])
        elif found:
            b.start_completion(insert_common_part=True)

    return kb


class PromptOutput(Output):
    """Prints above the prompt (prompt-toolkit's print_formatted_text), keeping a transcript."""

    def __init__(self, transcript: int = 5000) -> None:
        from prompt_toolkit.styles import Style

        self.style = Style.from_dict(STYLE)
        self.transcript: deque[str] = deque(maxlen=transcript)

    def lines(self, lines: list[Line]) -> None:
        if not lines:
            return
        from prompt_toolkit import print_formatted_text
        from prompt_toolkit.formatted_text import FormattedText

        frags: list[tuple[str, str]] = []
        for line in lines:
            self.transcript.append(plain(line))
            frags += [(f"class:{s}" if s else "", t) for s, t in line]
            frags.append(("", "\n"))
        print_formatted_text(FormattedText(frags), style=self.style, end="")
