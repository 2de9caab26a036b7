"""The built-in agent types. Importing this package registers them."""

from __future__ import annotations

import importlib

# The types orchgpt may spawn locally (kept import-light: orchgpt reads it too).
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
)

for _name in BUILTIN_TYPES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:  # a type not written yet
        if exc.name != f"{__name__}.{_name}":
            raise
