"""The baseline: a minimal grpc.aio relay with the same mutual TLS as orchgpt.

Bidirectional streams of ``orchgpt.iac.v1.Envelope`` bytes, one envelope per
frame; one asyncio.Queue per peer; no registry, no batching, no storage. A
peer's name is its certificate's CN; an envelope goes to the queue of
``recipient.agent_id`` (forwarded as the bytes it came in), TASK_EVENT
envelopes go to every watcher, anything else is dropped. This is the
practical ceiling for a Python router on the machine.

    python -m bench.baseline_relay --certs DIR   # prints {"event": "ready", "port": N}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc

from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.tls import peer_identity, server_credentials

from .childio import Commands, emit, run_child

QUEUE_SIZE = 1024
MAX_MESSAGE = 4 * 1024 * 1024


class Relay:
    def __init__(self, heartbeat_ms: int = 5000) -> None:
        self.queues: dict[str, asyncio.Queue[bytes]] = {}
        self.watchers: set[asyncio.Queue[bytes]] = set()
        self.heartbeat_ms = heartbeat_ms

    async def connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        name = peer_identity(context).name
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        hello = pb.Envelope.FromString(first)
        if hello.type != pb.REGISTER:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "REGISTER first")
        q: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        self.queues[name] = q
        await context.write(
            pb.Envelope(
                id=hello.id + "-ok",
                type=pb.REGISTERED,
                correlation_id=hello.id,
                registered=pb.Registered(
                    agent_id=name, heartbeat_interval_ms=self.heartbeat_ms, max_message_bytes=MAX_MESSAGE
                ),
            ).SerializeToString()
        )
        reader = asyncio.create_task(self._route(context))
        me = asyncio.current_task()
        if me is not None:  # the peer half-closed or failed: end this call too
            reader.add_done_callback(lambda _t: me.cancel())
        try:
            while True:
                await context.write(await q.get())
        finally:
            reader.cancel()
            if self.queues.get(name) is q:
                del self.queues[name]

    async def _route(self, context: grpc.aio.ServicerContext) -> None:
        queues, watchers = self.queues, self.watchers
        while True:
            raw = await context.read()
            if raw is grpc.aio.EOF:
                return
            env = pb.Envelope.FromString(raw)
            if env.type == pb.TASK_EVENT:
                for w in watchers:
                    await w.put(raw)
                continue
            target = env.recipient.agent_id
            if target:
                q = queues.get(target)
                if q is not None:
                    await q.put(raw)
            # heartbeats and anything unaddressed: dropped

    async def watch(self, request: bytes, context: grpc.aio.ServicerContext) -> None:
        q: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        self.watchers.add(q)
        await context.send_initial_metadata(())  # the client knows it is subscribed
        try:
            while True:
                await context.write(await q.get())
        finally:
            self.watchers.discard(q)


async def serve(
    certs: Path, host: str = "127.0.0.1", port: int = 0, heartbeat_ms: int = 5000
) -> tuple[grpc.aio.Server, int, Relay]:
    relay = Relay(heartbeat_ms)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Relay",
        {
            # No (de)serializers: the relay sees and forwards raw bytes.
            "Connect": grpc.stream_stream_rpc_method_handler(relay.connect),
            "Watch": grpc.unary_stream_rpc_method_handler(relay.watch),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_secure_port(f"{host}:{port}", server_credentials(paths_for(certs, "server")))
    await server.start()
    return server, bound, relay


async def _main(args: argparse.Namespace) -> None:
    server, port, _ = await serve(Path(args.certs), port=args.port, heartbeat_ms=args.heartbeat_ms)
    commands = Commands()
    emit("ready", port=port)
    try:
        await commands.closed.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--certs", required=True, help="directory made by bench.tlsdir.make_certs")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--heartbeat-ms", type=int, default=5000)
    ap.add_argument("--cap", type=float, default=900.0, help="wall-clock cap in seconds")
    args = ap.parse_args()
    run_child(lambda: _main(args), args.cap)


if __name__ == "__main__":
    main()
