"""An emitter's stream that sends token deltas as agentd does: folded and briefly lingering.

agentd queues its task's events in ``orchgpt.wire.token_fold.TokenOutbox``: a token delta is
folded into the task's previous one while that is still waiting to be sent, and a delta put
while the stream is idle waits up to ``linger`` for more (docs/protocol.md, token events). The
token benchmark's emitters (bench/tokens.py) stand for 64 such agents, so in orchgpt mode they
send through the very same class (``--no-fold``: one envelope per delta, as an agent written
to the protocol alone may; the daemon then folds only what arrives in one frame). The relay
baseline never folds: it is the one-envelope-per-frame pump.

Unlike agentd, an emitter may produce deltas faster than its stream takes them (``--rate 0``):
``send`` waits while ``queue_size`` deltas are unsent, as ``wire.Link``'s bounded queue does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.wire.token_fold import LINGER_S, TokenOutbox

from . import wire


class FoldingLink(wire.Link):
    def __init__(
        self,
        channel: grpc.aio.Channel,
        name: str,
        queue_size: int = 4096,
        linger_s: float = LINGER_S,
        linger_max_s: float | None = None,
    ) -> None:
        super().__init__(channel, wire.ORCHGPT, name, queue_size)
        self.box = TokenOutbox(linger_s=linger_s, linger_max_s=linger_max_s)
        self._limit = queue_size
        self._unsent = 0  # deltas (and other envelopes) queued and not yet written
        self._room = asyncio.Event()
        self._room.set()

    async def send(self, env: pb.Envelope) -> None:
        """Queue ``env`` (the link owns it from now on: a later delta may be folded into it)."""
        while self._unsent >= self._limit:
            self._room.clear()
            await self._room.wait()
        self.send_nowait(env)

    async def send_delta(self, task_id: str, text: str, build: Callable[[], pb.Envelope]) -> None:
        """A token delta as agentd's ``Link.emit`` queues it (``TokenOutbox.put_delta``)."""
        while self._unsent >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._unsent += 1
        self.box.put_delta(task_id, text, build)

    def send_nowait(self, env: pb.Envelope) -> None:
        self._unsent += 1
        self.box.put_token(env)

    async def _writer(self) -> None:
        async for batch in self.box.iterate():
            self.frames_out += 1
            await self._call.write(batch)
            self._unsent -= sum(e.event.deltas or 1 for e in batch.envelopes)
            if self._unsent < self._limit:
                self._room.set()

    async def close(self) -> None:
        self.box.close()
        await super().close()
