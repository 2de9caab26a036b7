"""What a sandboxed command left: `SandboxResult`, as the model reads it, and test summaries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class SandboxResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    network_isolated: bool
    uid_dropped: bool
    files_hidden: bool  # only the allow list is visible (a mount namespace)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False
    signal: str = ""  # name of the signal that ended the command, if any
    isolation: str = ""  # the mode used: "root-ns", "user-ns" or "none"
    uid: int | None = None  # the uid the command ran as, when it had its own

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def isolation_note(self) -> str:
        """Empty when fully isolated; otherwise what is missing, in one line."""
        return "; ".join(self.notes)

    def describe(self, limit: int = 12_000) -> str:
        """The result as the model reads it: exit status, then the output (bounded)."""
        if self.timed_out:
            head = f"$ {self.command}\n{self.notes_timeout()}"
        else:
            head = f"$ {self.command}\nexit code {self.exit_code}" + (f" (signal {self.signal})" if self.signal else "")
        parts = [head + f", {self.duration_s:.1f}s"]
        if self.stdout:
            parts.append("stdout:\n" + _tail(self.stdout, limit))
        if self.stderr:
            parts.append("stderr:\n" + _tail(self.stderr, limit // 2))
        return "\n".join(parts)

    def notes_timeout(self) -> str:
        return next((n for n in self.notes if n.startswith("killed at time limit")), "killed at time limit")


def summarize_tests(result: SandboxResult | None) -> str:
    """A test run in a few words: the runner's summary line (pytest's last line), or the exit status."""
    if result is None:
        return "no tests ran"
    if result.timed_out:
        return result.notes_timeout()
    for line in reversed(result.stdout.splitlines()):
        line = line.strip().strip("=").strip()
        if line and re.search(r"\b(passed|failed|error|ok|FAIL|PASS)\b", line, re.I):
            return line[:200]
    return f"exit code {result.exit_code}"


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[... cut ...]\n" + text[-limit:]
