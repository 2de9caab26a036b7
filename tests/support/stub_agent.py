"""A raw agent for tests: a Connect stream driven by hand (no agentd), that heartbeats and keeps
every envelope it receives, so a test can send anything and wait for what comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc

from orchgpt import codec
from orchgpt.batching import Outbox
from orchgpt.certs import CertPaths
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.tls import secure_channel


class StubAgent:
    def __init__(
        self,
        address: str,
        paths: CertPaths,
        name: str,
        agent_type: str = "stubtype",
        register: pb.Register | None = None,
    ) -> None:
        self.address, self.paths, self.name, self.agent_type = address, paths, name, agent_type
        self.register = register or pb.Register(agent_type=agent_type)  # (a test's own REGISTER)
        self.received: list[pb.Envelope] = []
        self._changed = asyncio.Event()
        self.out = Outbox()
        self.error: BaseException | None = None
        self.done = False

    async def __aenter__(self) -> StubAgent:
        self.channel = secure_channel(self.address, self.paths)
        self.out.put(codec.new_envelope(pb.REGISTER, self.name, register=self.register))
        self.call = pb_grpc.MeshStub(self.channel).Connect(self.out.iterate())
        self._reader = asyncio.ensure_future(self._read())
        self._hb = asyncio.ensure_future(self._heartbeat())
        await self.expect(pb.REGISTERED)
        return self

    async def __aexit__(self, *_: Any) -> None:
        self._hb.cancel()
        self.out.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.channel.close()

    async def _read(self) -> None:
        try:
            async for batch in self.call:
                self.received.extend(batch.envelopes)
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        finally:
            self.done = True
            self._changed.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.out.put(codec.new_envelope(pb.HEARTBEAT, self.name, heartbeat=pb.Heartbeat(state=pb.IDLE)))

    def send(self, type_: int, **fields: Any) -> pb.Envelope:
        env = codec.new_envelope(type_, self.name, **fields)
        self.out.put(env)
        return env

    async def expect(
        self, type_: int, pred: Callable[[pb.Envelope], bool] = lambda e: True, timeout: float = 10.0
    ) -> pb.Envelope:
        """The first received envelope of this type matching pred (consumed), waiting up to timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, env in enumerate(self.received):
                if env.type == type_ and pred(env):
                    return self.received.pop(i)
            if self.done:
                raise AssertionError(f"stream ended ({self.error}) before a {pb.MessageType.Name(type_)}")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(
                    f"no {pb.MessageType.Name(type_)} within {timeout}s; got "
                    f"{[pb.MessageType.Name(e.type) for e in self.received]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def error_for(self, env: pb.Envelope, timeout: float = 10.0) -> pb.Envelope:
        return await self.expect(pb.ERROR, lambda e: e.correlation_id == env.id, timeout)

    def seen(self, type_: int) -> list[pb.Envelope]:
        return [e for e in self.received if e.type == type_]
