"""One exception root for agentd."""

from __future__ import annotations


class AgentdError(Exception):
    """Root of every error agentd raises on purpose."""


class TaskFailed(AgentdError):
    """An agent gives up on its task; the message is the reason the user sees."""


class ToolError(AgentdError):
    """A tool call was refused or failed (bad path, sandbox error, ...)."""


class LLMError(AgentdError):
    """The model server failed, timed out, or rejected the request."""


class DelegationError(AgentdError):
    """A delegated sub-task could not be submitted."""


class AskError(AgentdError):
    """An agent-to-agent COMMAND (TaskContext.ask) was refused or could not be delivered."""


class AskTimeout(AskError, TimeoutError):
    """No REPLY to an agent-to-agent COMMAND arrived within its timeout."""
