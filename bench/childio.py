"""The child side of children.py: JSON lines out, commands in, exit on stdin EOF."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


class Commands:
    """Commands from the parent; ``None`` once stdin closes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def reader() -> None:
            for line in sys.stdin:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                loop.call_soon_threadsafe(self.queue.put_nowait, msg)
            loop.call_soon_threadsafe(self.queue.put_nowait, None)
            loop.call_soon_threadsafe(self.closed.set)

        threading.Thread(target=reader, daemon=True, name="stdin").start()

    async def get(self, timeout: float) -> dict[str, Any] | None:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def expect(self, command: str, timeout: float) -> dict[str, Any]:
        while True:
            msg = await self.get(timeout)
            if msg is None:
                raise SystemExit(0)  # the parent is gone
            if msg.get("cmd") == command:
                return msg


def run_child(main: Callable[[], Awaitable[None]], cap_s: float) -> None:
    """Run ``main`` with a wall-clock cap; report failures as an "error" line, exit non-zero."""

    async def capped() -> None:
        await asyncio.wait_for(main(), cap_s)

    try:
        asyncio.run(capped())
    except SystemExit:
        raise
    except BaseException as exc:  # report anything, including the timeout
        traceback.print_exc(file=sys.stderr)
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        emit("error", message=reason)
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # do not wait for gRPC's threads
