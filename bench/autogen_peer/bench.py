"""Run AutoGen's round trips from the harness (this module runs in the main interpreter)."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import placement
from ..children import Children
from ..routing import RoundTripPeers
from .venv import ensure_venv

MODULE = "bench.autogen_peer.rt"


async def round_trip_peers(children: Children, install_timeout: float = 600.0) -> RoundTripPeers:
    """Host on the router CPU, echo and driver workers on the peer CPU, ready to measure.
    Raises VenvError when AutoGen cannot be installed."""
    python = str(await asyncio.to_thread(ensure_venv, timeout=install_timeout))
    host = await children.python("autogen-host", MODULE, ["host"], cpus=placement.ROUTER_CPUS, python=python)
    ready = await host.expect("ready", 60)
    address = f"127.0.0.1:{ready['port']}"
    echo = await children.python(
        "autogen-echo", MODULE, ["echo", "--host", address], cpus=placement.PEER_CPUS, python=python
    )
    await echo.expect("ready", 60)
    driver = await children.python(
        "autogen-driver",
        MODULE,
        ["driver", "--host", address, "--router-pid", str(host.pid)],
        cpus=placement.PEER_CPUS,
        python=python,
    )
    await driver.expect("ready", 60)
    return RoundTripPeers("autogen", driver, [echo, host])


async def round_trips(
    children: Children, inflight: list[int], warmup: float, duration: float, install_timeout: float = 600.0
) -> dict[str, Any]:
    peers = await round_trip_peers(children, install_timeout)
    try:
        return {"results": [await peers.measure(n, warmup, duration) for n in inflight], "tls": False}
    finally:
        await peers.stop()
