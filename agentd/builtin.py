"""The built-in agent types (import-free: orchgpt reads this without loading the agents)."""

from __future__ import annotations

from pathlib import Path

BUILTIN_TYPES: tuple[str, ...] = (
    "echo",
    "manager",
    "architect",
    "backend",
    "frontend",
    "designer",
    "git",
    "optimizer",
    "mailer",
    "workflow",
    "assistant",
    "user_proxy",
    "graph",
    "blocks",
)

AGENTS_DIR = Path(__file__).resolve().parent / "agents"


def available_types() -> frozenset[str]:
    """Built-in types whose module is present in this installation."""
    return frozenset(t for t in BUILTIN_TYPES if (AGENTS_DIR / f"{t}.py").is_file())
