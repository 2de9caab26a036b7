"""Blocks and the graph runner's block side (docs/graphs.md)."""

from __future__ import annotations

from .base import ERROR_PIN, Block, BlockContext, BlockError, BlockOutput, collect, execute
from .registry import catalog, get, load, register

__all__ = [
    "ERROR_PIN",
    "Block",
    "BlockContext",
    "BlockError",
    "BlockOutput",
    "catalog",
    "collect",
    "execute",
    "get",
    "load",
    "register",
]
