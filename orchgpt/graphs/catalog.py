"""The block catalog as the daemon knows it: asked of the agent program (`python -m
agentd.blocks list --json`), never imported, once per process and on demand."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from .. import logs
from ..errors import ErrorCode, OrchgptError

log = logs.get("orchgpt.graphs")

BLOCKS_COMMAND: tuple[str, ...] = (sys.executable, "-m", "agentd.blocks")
TIMEOUT = 60.0


class CatalogError(OrchgptError):
    """The agent program could not say which blocks exist."""

    code = ErrorCode.UNAVAILABLE


class BlockCatalog:
    def __init__(self, command: tuple[str, ...] = BLOCKS_COMMAND, timeout: float = TIMEOUT) -> None:
        self.command = command
        self.timeout = timeout
        self._entries: list[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def entries(self) -> list[dict[str, Any]]:
        """Every block's catalog entry (id, name, description, categories, JSON Schemas)."""
        async with self._lock:
            if self._entries is None:
                self._entries = await self._ask()
            return self._entries

    async def by_id(self) -> dict[str, dict[str, Any]]:
        return {str(e["id"]): e for e in await self.entries()}

    async def _ask(self) -> list[dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            "list",
            "--json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CatalogError(f"the block catalog: no answer in {self.timeout:g}s") from None
        if proc.returncode != 0:
            raise CatalogError("the block catalog: " + err.decode(errors="replace").strip()[-300:])
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise CatalogError(f"the block catalog is not JSON: {exc}") from None
        if not isinstance(data, list):
            raise CatalogError("the block catalog is not a list")
        log.info("block_catalog_loaded", blocks=len(data))
        return [e for e in data if isinstance(e, dict) and "id" in e]
