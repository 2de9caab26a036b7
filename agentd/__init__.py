"""agentd: the thin agent client of the orchgpt mesh (one process per agent)."""

__version__ = "0.1.0"
