"""The model layer of agentd: one client over any OpenAI-compatible server.

See `agentd.llm.client` for the behaviour, `agentd.llm.profiles` for what a
model can do, `agentd.llm.strategies` for models that do not use the tools,
and `tests/support/scripted_openai.py` for the server the tests drive it with.
"""

from ..errors import LLMError
from .client import LLM
from .profiles import PROFILES, ModelProfile, ProfileCache
from .types import ChatResult, ToolCall, ToolSpec, tool_result_message

__all__ = [
    "LLM",
    "PROFILES",
    "ChatResult",
    "LLMError",
    "ModelProfile",
    "ProfileCache",
    "ToolCall",
    "ToolSpec",
    "tool_result_message",
]
