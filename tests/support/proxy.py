"""A TCP proxy on loopback between agentd and orchgpt that a test can cut on command.

It forwards bytes unchanged (the TLS session is end to end), runs in its own thread with
its own event loop (so that a test's loop and blocking calls do not stall it), and can:

- ``cut()``: close every open connection at once (both sides see the stream end);
- ``pause()`` / ``resume()``: refuse new connections meanwhile (accepted and closed at once);
- ``blackhole(direction)``: on the connections open now, swallow the bytes of one direction
  from now on ("up" = agent to orchgpt, "down" = orchgpt to agent), as a network that silently
  loses them would (new connections are not affected).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any


class CutProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # accepted and forwarded so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cut-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._paused = False
        self._blackhole: set[tuple[int, str]] = set()  # (connection number, direction)
        self._live: set[int] = set()

    # ---- control (from any thread)
    def start(self) -> CutProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def blackhole(self, direction: str) -> None:
        assert direction in ("up", "down")
        self._blackhole.update((n, direction) for n in list(self._live))

    def set_target(self, port: int) -> None:
        self.target_port = port

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> CutProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- inside the proxy's loop
    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        writers, self._open = self._open, set()
        for w in writers:
            w.transport.abort()

    async def _close(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._paused:
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        n = self.connections
        self._live.add(n)
        self._open.update((writer, up_w))
        await asyncio.gather(
            self._pipe(reader, up_w, (n, "up")),
            self._pipe(up_r, writer, (n, "down")),
            return_exceptions=True,
        )
        self._live.discard(n)
        for w in (writer, up_w):
            self._open.discard(w)
            w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: tuple[int, str]
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if direction in self._blackhole:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
