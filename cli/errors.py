"""One exception root for the CLI, and the exit codes it documents."""

from __future__ import annotations

# Exit codes (documented in `autogpt --help`).
EXIT_OK = 0
EXIT_TASK_FAILED = 1  # a task failed or was cancelled, or a command was refused
EXIT_USAGE = 2  # bad arguments or a command line that does not parse
EXIT_CONNECTION = 3  # malformed address, unreachable daemon, certificate missing or refused
EXIT_INTERRUPTED = 130  # Ctrl-C in one-shot mode (the task is cancelled)


class CliError(Exception):
    """A problem the user must see as one line; `exit_code` says how to exit."""

    exit_code = EXIT_TASK_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


class ParseError(CliError):
    """A command line that does not follow the grammar."""

    exit_code = EXIT_USAGE


class ConnectionProblem(CliError):
    """The orchestrator cannot be reached or refuses us."""

    exit_code = EXIT_CONNECTION
