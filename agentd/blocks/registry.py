"""Where blocks come from: the built-in library (agentd.blocks.library.*) and entry points.

A package ships blocks by naming a module or a Block class in the ``orchgpt.blocks`` entry
point group (pyproject: ``[project.entry-points."orchgpt.blocks"] mine = "mypkg.blocks"``);
every Block subclass with an id that the module defines is registered.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from orchgpt import logs

from .base import Block

log = logs.get("agentd.blocks")

ENTRY_POINT_GROUP = "orchgpt.blocks"

_BLOCKS: dict[str, type[Block]] = {}
_loaded = False


def register(cls: type[Block]) -> type[Block]:
    """Class decorator (or call): make a block available."""
    if not cls.id:
        raise ValueError(f"block class {cls.__name__} has no id")
    other = _BLOCKS.get(cls.id)
    if other is not None and other is not cls:
        raise ValueError(f"block id {cls.id!r} is taken by {other.__module__}.{other.__name__}")
    _BLOCKS[cls.id] = cls
    return cls


def _from_module(mod: ModuleType) -> None:
    for _, obj in inspect.getmembers(mod, inspect.isclass):
        if issubclass(obj, Block) and obj is not Block and obj.id and obj.__module__ == mod.__name__:
            register(obj)


def _load_entry_point(ep: Any) -> None:
    try:
        obj = ep.load()
    except Exception as exc:  # a broken third-party package must not hide the others
        log.warning("blocks_entry_point_failed", name=ep.name, error=f"{type(exc).__name__}: {exc}")
        return
    if inspect.ismodule(obj):
        _from_module(obj)
    elif inspect.isclass(obj) and issubclass(obj, Block):
        register(obj)
    else:
        log.warning("blocks_entry_point_ignored", name=ep.name, reason="not a module or Block class")


def load() -> dict[str, type[Block]]:
    """Every block: the built-in library, then the entry points (once per process)."""
    global _loaded
    if not _loaded:
        from . import library

        for info in pkgutil.iter_modules(library.__path__):
            if not info.name.startswith("_"):
                _from_module(importlib.import_module(f"{library.__name__}.{info.name}"))
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(ep)
        _loaded = True
    return dict(_BLOCKS)


def get(block_id: str) -> type[Block]:
    blocks = load()
    try:
        return blocks[block_id]
    except KeyError:
        raise KeyError(f"unknown block {block_id!r}; known blocks: {', '.join(sorted(blocks))}") from None


def catalog() -> list[dict[str, Any]]:
    """Every block's catalog entry (schema()), sorted by id."""
    return [cls.schema() for _, cls in sorted(load().items())]
