"""The built-in agent types, one module each (agentd.agents.<type>).

Modules are imported on demand by `agentd.runtime.agent_class`, so that an echo
agent does not pay for loading the model layer.
"""

from __future__ import annotations

from ..builtin import BUILTIN_TYPES, available_types

__all__ = ["BUILTIN_TYPES", "available_types"]
