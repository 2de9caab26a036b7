"""The values the model layer takes and returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orchgpt.models import Usage


@dataclass
class ToolSpec:
    """A tool the model may call; ``parameters`` is a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def openai(self) -> dict[str, Any]:
        """The ``tools`` entry of a chat completion request."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The entry of an assistant message's ``tool_calls``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass
class ChatResult:
    content: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: str
    mode: str  # "native" | "compat": how tools were offered to the model
    # Set when the model kept answering with malformed tool calls until the retries ran out
    # (finish_reason is then "invalid_tool_call"): the last validation error.
    tool_error: str = ""

    def assistant_message(self) -> dict[str, Any]:
        """The message to append to the history, in either mode (LLM adapts it for compat)."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [c.openai() for c in self.tool_calls]
        return msg


def tool_result_message(call: ToolCall, output: str) -> dict[str, Any]:
    """The message that answers a tool call, in either mode (LLM adapts it for compat)."""
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": output}
