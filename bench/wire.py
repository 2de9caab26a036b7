"""How a bench peer talks to a router: the baseline relay or the orchgpt daemon.

Both speak ``orchgpt.iac.v1.Envelope``s over one bidirectional stream with
the same mutual TLS and the same handshake (REGISTER, then REGISTERED). They
differ only in framing:

- ``baseline``: one Envelope per frame (``/bench.Relay/Connect``);
- ``orchgpt``: ``Batch`` frames (``/orchgpt.iac.v1.Mesh/Connect``); a sender
  packs every envelope it has ready into one Batch, and sends a Batch of one
  at once when idle.

The peer code above this module is identical for both routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from typing import Any

import grpc

from orchgpt.certs import CertPaths
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.tls import channel_credentials, channel_options

BASELINE = "baseline"
ORCHGPT = "orchgpt"
MODES = (BASELINE, ORCHGPT)

CONNECT_METHOD = {BASELINE: "/bench.Relay/Connect", ORCHGPT: "/orchgpt.iac.v1.Mesh/Connect"}
WATCH_METHOD = {BASELINE: "/bench.Relay/Watch", ORCHGPT: "/orchgpt.iac.v1.Mesh/Watch"}

MAX_BATCH = 256
_ids = itertools.count(1)
_prefix = f"{os.getpid():x}-"


def next_id() -> str:
    """A unique message id (cheaper than uuid4 on the hot path; unique per run)."""
    return f"{_prefix}{next(_ids)}"


class LinkClosed(Exception):
    """The router ended the stream."""


def open_channel(target: str, paths: CertPaths, own_connection: bool = False) -> grpc.aio.Channel:
    """A mutual-TLS channel to ``target`` (127.0.0.1:PORT) with orchgpt's options."""
    opts = channel_options(target)
    if own_connection:
        # Never share the TCP connection with another channel of this process.
        opts.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.secure_channel(target, channel_credentials(paths), options=opts)


class Link:
    """One agent's stream to the router."""

    def __init__(self, channel: grpc.aio.Channel, mode: str, name: str, queue_size: int = 4096) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
        self.mode = mode
        self.name = name
        self.agent_id = name
        self.heartbeat_s = 0.0
        self.daemon_ack = False  # orchgpt's REGISTERED.agent_pings: our HEARTBEATs acknowledge an interval
        self.last_rx = time.monotonic()
        self._channel = channel
        self._out: asyncio.Queue[pb.Envelope] = asyncio.Queue(queue_size)
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: list[pb.Envelope] = []
        self.frames_out = 0
        self.frames_in = 0
        if mode == ORCHGPT:
            self._call = channel.stream_stream(
                CONNECT_METHOD[mode],
                request_serializer=pb.Batch.SerializeToString,
                response_deserializer=pb.Batch.FromString,
            )()
        else:
            self._call = channel.stream_stream(
                CONNECT_METHOD[mode],
                request_serializer=pb.Envelope.SerializeToString,
                response_deserializer=pb.Envelope.FromString,
            )()

    async def register(self, agent_type: str = "bench", timeout: float = 15.0, heartbeats: bool = True) -> str:
        """REGISTER, wait for REGISTERED; returns the agent id the router gave."""
        reg = pb.Envelope(
            id=next_id(),
            sender=self.name,
            type=pb.REGISTER,
            register=pb.Register(
                agent_type=agent_type,
                capabilities=[agent_type],
                host=socket.gethostname(),
                pid=os.getpid(),
                version="bench",
            ),
        )
        await asyncio.wait_for(self._write([reg]), timeout)
        while True:
            envs = await asyncio.wait_for(self._read(), timeout)
            for env in envs:
                if env.type == pb.REGISTERED:
                    self.agent_id = env.registered.agent_id or self.name
                    self.heartbeat_s = env.registered.heartbeat_interval_ms / 1000
                    self.daemon_ack = env.registered.agent_pings
                    self._tasks.append(asyncio.create_task(self._writer()))
                    if heartbeats and self.heartbeat_s > 0:
                        self._tasks.append(asyncio.create_task(self._heartbeats()))
                    return self.agent_id
                if env.type == pb.ERROR:
                    raise LinkClosed(f"{self.name}: registration refused: {env.error.code} {env.error.message}")

    async def send(self, env: pb.Envelope) -> None:
        await self._out.put(env)

    def send_nowait(self, env: pb.Envelope) -> None:
        self._out.put_nowait(env)

    async def recv(self) -> list[pb.Envelope]:
        """The next frame's envelopes (PINGs answered and left out); LinkClosed at the end."""
        while True:
            envs = await self._read()
            out = []
            for env in envs:
                t = env.type
                if t == pb.PING and self.mode == ORCHGPT:
                    # like agentd: orchgpt's PING needs no answer (our HEARTBEATs are the answer),
                    # but a new heartbeat interval in it is adopted and acknowledged (in our next
                    # HEARTBEAT, or by a PING of our own to an older daemon)
                    ms = env.ping.heartbeat_interval_ms
                    if ms > 0:
                        self.heartbeat_s = ms / 1000
                    if ms > 0 and not self.daemon_ack:
                        with contextlib.suppress(asyncio.QueueFull):
                            self.send_nowait(
                                pb.Envelope(
                                    id=next_id(),
                                    sender=self.name,
                                    type=pb.PING,
                                    ping=pb.Ping(heartbeat_interval_ms=ms),
                                )
                            )
                elif t == pb.PING:
                    # Any traffic answers a PING: with a full send queue there is plenty.
                    with contextlib.suppress(asyncio.QueueFull):
                        self.send_nowait(
                            pb.Envelope(id=next_id(), sender=self.name, type=pb.PONG, correlation_id=env.id)
                        )
                elif t != pb.PONG:
                    out.append(env)
            if out:
                return out

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(BaseException):
            self._call.cancel()

    # ---- framing
    async def _read(self) -> list[pb.Envelope]:
        msg = await self._call.read()
        if msg is grpc.aio.EOF:
            raise LinkClosed(f"{self.name}: the router closed the stream")
        self.frames_in += 1
        self.last_rx = time.monotonic()
        if self.mode == ORCHGPT:
            return list(msg.envelopes)
        return [msg]

    async def _write(self, envs: list[pb.Envelope]) -> None:
        if self.mode == ORCHGPT:
            self.frames_out += 1
            await self._call.write(pb.Batch(envelopes=envs))
        else:
            for env in envs:
                self.frames_out += 1
                await self._call.write(env)

    async def _writer(self) -> None:
        q = self._out
        batching = self.mode == ORCHGPT
        while True:
            env = await q.get()
            if batching:
                envs = [env]
                while len(envs) < MAX_BATCH and not q.empty():
                    envs.append(q.get_nowait())
                self.frames_out += 1
                await self._call.write(pb.Batch(envelopes=envs))
            else:
                self.frames_out += 1
                await self._call.write(env)

    async def _heartbeats(self) -> None:
        # orchgpt: like agentd (agentd/heartbeat.py), one message a tick and only from us: a
        # HEARTBEAT stating our interval, or a PING after 1.5 intervals without a frame from it
        watch = self.mode == ORCHGPT
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if watch and time.monotonic() - self.last_rx >= self.heartbeat_s * 1.5:
                await self.send(pb.Envelope(id=next_id(), sender=self.name, type=pb.PING))
                continue
            hb = pb.Heartbeat(state=pb.IDLE, heartbeat_interval_ms=int(self.heartbeat_s * 1000) if watch else 0)
            await self.send(pb.Envelope(id=next_id(), sender=self.name, type=pb.HEARTBEAT, heartbeat=hb))


def watch_call(channel: grpc.aio.Channel, mode: str, task_id: str = "") -> Any:
    """Subscribe to task events; the call yields Envelopes (baseline) or Batches (orchgpt)."""
    if mode == ORCHGPT:
        return channel.unary_stream(
            WATCH_METHOD[mode],
            request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.Batch.FromString,
        )(pb.WatchRequest(task_id=task_id))
    return channel.unary_stream(
        WATCH_METHOD[mode],
        request_serializer=pb.WatchRequest.SerializeToString,
        response_deserializer=pb.Envelope.FromString,
    )(pb.WatchRequest(task_id=task_id))
