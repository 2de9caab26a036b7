"""AutoGen side of the round-trip benchmark; runs in bench/.venv-autogen.

    python -m bench.autogen_peer.rt host
    python -m bench.autogen_peer.rt echo   --host 127.0.0.1:PORT
    python -m bench.autogen_peer.rt driver --host 127.0.0.1:PORT --inflight 1,64 --duration 3

Imports only the standard library, AutoGen and bench's stdlib-only helpers.
AutoGen's host listens without TLS (GrpcWorkerAgentRuntimeHost calls
add_insecure_port; the worker uses an insecure channel): the comparison is
plaintext AutoGen against mutual-TLS orchgpt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    message_handler,
    try_get_known_serializers_for_type,
)
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHost

from ..childio import Commands, emit, run_child
from ..procstat import cpu_seconds
from ..stats import percentile

PAYLOAD = "x" * 200  # 200-byte payloads (JSON string)


@dataclass
class Ping:
    payload: str


@dataclass
class Pong:
    payload: str


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        return Pong(message.payload)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serializers(runtime: GrpcWorkerAgentRuntime) -> None:
    runtime.add_message_serializer(try_get_known_serializers_for_type(Ping))
    runtime.add_message_serializer(try_get_known_serializers_for_type(Pong))


async def host(args: argparse.Namespace) -> None:
    commands = Commands()
    port = _free_port()
    h = GrpcWorkerAgentRuntimeHost(address=f"127.0.0.1:{port}")
    h.start()
    await asyncio.sleep(0.2)
    emit("ready", port=port, tls=False)
    await commands.closed.wait()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(h.stop(grace=0), 3)


async def echo(args: argparse.Namespace) -> None:
    commands = Commands()
    rt = GrpcWorkerAgentRuntime(host_address=args.host)
    _serializers(rt)
    await rt.start()
    await Echo.register(rt, "echo", lambda: Echo())
    await asyncio.sleep(0.3)  # the host learns the type
    emit("ready")
    await commands.closed.wait()


async def driver(args: argparse.Namespace) -> None:
    commands = Commands()
    rt = GrpcWorkerAgentRuntime(host_address=args.host)
    _serializers(rt)
    await rt.start()
    target = AgentId("echo", "default")
    reply = await asyncio.wait_for(rt.send_message(Ping(PAYLOAD), target), 30)
    if not isinstance(reply, Pong) or reply.payload != PAYLOAD:
        raise RuntimeError(f"unexpected reply from the AutoGen echo agent: {reply!r}")
    emit("ready")
    # {"cmd": "measure", "inflight": N, "warmup": S, "duration": S} -> "result"; {"cmd": "exit"}
    while True:
        cmd = await commands.get(3600)
        if cmd is None or cmd.get("cmd") == "exit":
            return
        if cmd.get("cmd") == "measure":
            inflight, warmup, duration = int(cmd["inflight"]), float(cmd["warmup"]), float(cmd["duration"])
            result = await asyncio.wait_for(
                _round_trips(rt, target, args, inflight, warmup, duration), warmup + duration + 30
            )
            emit("result", **result)


async def _round_trips(
    rt: GrpcWorkerAgentRuntime, target: AgentId, args: argparse.Namespace, inflight: int, warmup: float, duration: float
) -> dict[str, Any]:
    latencies: list[float] = []
    state = {"measuring": False, "stop": False}

    async def lane() -> None:
        while not state["stop"]:
            t0 = time.perf_counter()
            await rt.send_message(Ping(PAYLOAD), target)
            if state["measuring"]:
                latencies.append(time.perf_counter() - t0)

    lanes = [asyncio.create_task(lane()) for _ in range(inflight)]
    try:
        await asyncio.sleep(warmup)
        cpu0 = cpu_seconds(args.router_pid) if args.router_pid else 0.0
        t0 = time.perf_counter()
        state["measuring"] = True
        done, _ = await asyncio.wait(lanes, timeout=duration, return_when=asyncio.FIRST_EXCEPTION)
        state["measuring"] = False
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(args.router_pid) if args.router_pid else 0.0
        for t in done:
            t.result()
    finally:
        state["stop"] = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*lanes, return_exceptions=True), 5)
        for t in lanes:
            t.cancel()
    n = len(latencies)
    if n == 0:
        raise RuntimeError(f"no AutoGen round trip completed in {duration}s with {inflight} in flight")
    router_cpu = cpu1 - cpu0
    return {
        "inflight": inflight,
        "round_trips": n,
        "seconds": elapsed,
        "rps": n / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "router_cpu_s": router_cpu,
        "router_cpu_us_per_rt": router_cpu / n * 1e6 if args.router_pid else None,
        "router_cpu_util": router_cpu / elapsed if args.router_pid else None,
        "tls": False,
    }


ROLES = {"host": host, "echo": echo, "driver": driver}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--host", default="", help="HOST:PORT of the AutoGen host")
    ap.add_argument("--router-pid", type=int, default=0)
    ap.add_argument("--cap", type=float, default=300.0)
    args = ap.parse_args()
    if args.role != "host" and not args.host.startswith("127.0.0.1:"):
        ap.error("the AutoGen benchmark only talks to 127.0.0.1")
    run_child(lambda: ROLES[args.role](args), args.cap)


if __name__ == "__main__":
    main()
