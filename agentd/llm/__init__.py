"""The model layer of agentd: one client over any OpenAI-compatible server.

See `agentd.llm.client` for the behaviour and `tests/support/scripted_openai.py`
for the server the tests drive it with.
"""

from ..errors import LLMError
from .client import LLM
from .types import ChatResult, ToolCall, ToolSpec, tool_result_message

__all__ = ["LLM", "ChatResult", "LLMError", "ToolCall", "ToolSpec", "tool_result_message"]
