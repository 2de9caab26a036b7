"""Routing benchmarks against one router (baseline relay or orchgpt daemon).

- round trips: agent A -> router -> agent B -> router -> A, 200-byte payloads,
  closed loop with 1 and 64 in flight: round trips/s, p50/p99 latency and the
  router's CPU per round trip;
- events: token-delta TASK_EVENTs from N agents to a subscribed client:
  events/s delivered and events per frame.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import placement
from .children import Child, Children


@dataclass
class Router:
    mode: str  # wire.BASELINE or wire.ORCHGPT
    target: str  # 127.0.0.1:PORT
    pid: int
    certs: Path


async def start_baseline(children: Children, certs: Path, heartbeat_ms: int = 5000) -> Router:
    relay = await children.python(
        "baseline-relay",
        "bench.baseline_relay",
        ["--certs", str(certs), "--heartbeat-ms", str(heartbeat_ms)],
        cpus=placement.ROUTER_CPUS,
    )
    ready = await relay.expect("ready", 30)
    return Router("baseline", f"127.0.0.1:{ready['port']}", relay.pid, certs)


def _peer_args(router: Router, role: str, name: str) -> list[str]:
    return [
        role,
        "--mode",
        router.mode,
        "--target",
        router.target,
        "--certs",
        str(router.certs),
        "--name",
        name,
        "--router-pid",
        str(router.pid),
    ]


class RoundTripPeers:
    """A router's echo peer B and driver A, started once and measured on command, so that
    routers can be measured in alternation, seconds apart (a noisy machine drifts)."""

    def __init__(self, mode: str, driver: Child, others: list[Child]) -> None:
        self.mode = mode
        self.driver = driver
        self.others = others

    async def measure(self, inflight: int, warmup: float, duration: float) -> dict[str, Any]:
        await self.driver.send(cmd="measure", inflight=inflight, warmup=warmup, duration=duration)
        return await self.driver.expect("result", warmup + duration + 60)

    async def stop(self) -> None:
        await self.driver.send(cmd="exit")
        for child in (self.driver, *self.others):
            await child.stop()


async def round_trip_peers(
    children: Children, router: Router, names: tuple[str, str] = ("bench-a", "bench-b")
) -> RoundTripPeers:
    tag = router.mode
    b = await children.python(
        f"{tag}-echo", "bench.peer", _peer_args(router, "echo", names[1]), cpus=placement.PEER_CPUS
    )
    b_ready = await b.expect("ready", 30)
    a = await children.python(
        f"{tag}-driver",
        "bench.peer",
        [*_peer_args(router, "driver", names[0]), "--peer", b_ready["agent_id"]],
        cpus=placement.PEER_CPUS,
    )
    await a.expect("ready", 30)
    return RoundTripPeers(router.mode, a, [b])


async def round_trips(
    children: Children,
    router: Router,
    inflight: list[int],
    warmup: float,
    duration: float,
    names: tuple[str, str] = ("bench-a", "bench-b"),
) -> list[dict[str, Any]]:
    """Run the echo peer B and the driver A; one result per in-flight setting."""
    peers = await round_trip_peers(children, router, names)
    try:
        return [await peers.measure(n, warmup, duration) for n in inflight]
    finally:
        await peers.stop()


async def events(
    children: Children,
    router: Router,
    agents: int,
    per_agent: int,
    warmup: float,
    duration: float,
    client_name: str = "cli",
    prefix: str = "bench-tok-",
    start_tasks: Callable[[list[str]], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """N emitting agents in one process, one watching client in another.

    Baseline: the emitters start on a "go" command. orchgpt: ``start_tasks``
    submits one task per emitting agent and the daemon's RUN starts them.
    """
    tag = router.mode
    total = agents * per_agent
    cap_s = warmup + duration + 30
    w = await children.python(
        f"{tag}-watcher",
        "bench.peer",
        [
            *_peer_args(router, "watcher", client_name),
            "--expect",
            str(total),
            "--cap-events",
            str(cap_s),
            "--warmup",
            str(warmup),
            "--duration",
            str(duration),
        ],
        cpus=placement.PEER_CPUS,
    )
    await w.expect("ready", 30)
    e = await children.python(
        f"{tag}-emitters",
        "bench.peer",
        [
            *_peer_args(router, "emitters", prefix + "0"),
            "--prefix",
            prefix,
            "--agents",
            str(agents),
            "--events",
            str(per_agent),
            "--agent-type",
            "bench-tok",
        ],
        cpus=placement.PEER_CPUS,
    )
    ready = await e.expect("ready", 60)
    if start_tasks is None:
        await e.send(cmd="go")
    else:
        await start_tasks(ready["agent_ids"])
    result = await w.expect("result", cap_s + 30)
    await w.send(cmd="exit")
    for child in (w, e):
        await child.stop()
    result.update(agents=agents, per_agent=per_agent)
    return result


def python_exe() -> str:
    return sys.executable


__all__ = ["Child", "Router", "events", "round_trips", "start_baseline"]


def task_starter(
    router: Router,
    agent_type: str = "bench-tok",
    timeout: float = 20.0,
) -> Callable[[list[str]], Awaitable[None]]:
    """orchgpt: submit one RUN task per emitting agent (as the CLI would), and leave the
    Submit streams at once so that only the Watch client receives the events."""

    async def start(agent_ids: list[str]) -> None:
        import asyncio

        from orchgpt.iac.v1 import iac_pb2 as pb
        from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc

        from . import tlsdir, wire

        channel = wire.open_channel(router.target, tlsdir.client_paths(router.certs))
        try:
            stub = pb_grpc.MeshStub(channel)

            async def one(i: int) -> None:
                call = stub.Submit(
                    pb.SubmitRequest(
                        command=pb.Command(agent_type=agent_type, action=pb.RUN_ACTION, input=f"bench {i}")
                    ),
                    timeout=timeout,
                )
                try:
                    first = await call.read()
                    if first is wire.grpc.aio.EOF or not first.envelopes:
                        raise RuntimeError("orchgpt ended the Submit stream without an event")
                finally:
                    call.cancel()

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(len(agent_ids)))), timeout)
        finally:
            await channel.close()

    return start
