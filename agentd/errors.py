"""One exception root for agentd; its errors carry orchgpt's ErrorCode (gRPC status names)."""

from __future__ import annotations

from orchgpt.errors import ErrorCode


class AgentdError(Exception):
    """Root of every error agentd raises on purpose; ``code`` says what kind of failure it is
    (each subclass has its default; ``code``, an ErrorCode or its name, overrides it)."""

    code: ErrorCode = ErrorCode.UNKNOWN

    def __init__(self, message: str = "", code: ErrorCode | str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = ErrorCode.of(code)


class TaskFailed(AgentdError):
    """An agent gives up on its task; the message is the reason the user sees."""


class ToolError(AgentdError):
    """A tool call was refused or failed (bad path, sandbox error, ...)."""


class LLMError(AgentdError):
    """The model server failed, timed out, or rejected the request."""

    code = ErrorCode.UNAVAILABLE


class DelegationError(AgentdError):
    """A delegated sub-task could not be submitted."""


class AskError(AgentdError):
    """An agent-to-agent COMMAND (TaskContext.ask) was refused or could not be delivered."""


class AskTimeout(AskError, TimeoutError):
    """No REPLY to an agent-to-agent COMMAND arrived within its timeout."""

    code = ErrorCode.DEADLINE_EXCEEDED
