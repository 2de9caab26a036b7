"""The durable-queue baseline: a RabbitMQ broker from Debian's package, durable queue, persistent
messages, publisher confirms, through aio-pika; messages/s with N publishes in flight.

    python -m bench.rabbit --inflight 1,64 --duration 3      # standalone, prints JSON lines

The broker is started by this process (tests/support/rabbitmq.py's logic: a temp dir, its own
epmd on a free port, its own node name, ports and Erlang cookie, loopback only) and stopped in a
``finally`` with timeouts (``rabbitmqctl stop``, then SIGTERM/SIGKILL of its process group).
When RabbitMQ or aio-pika is missing it emits ``{"event": "result", "missing": "why"}`` and exits
0, so that the benchmark's other phases still run.

For each N: N lanes each publish a persistent message to a durable queue and await its
confirm (the broker has written it) before the next; one consumer on its own connection takes
them with manual acks (prefetch 256). The figure is messages confirmed per second over the
window, with the consumer keeping up (``consumed_per_s`` and the backlog left at the end are in
the JSON): what "a durable RabbitMQ queue with publisher confirms moves N messages/s" means.
``closed_loop_per_s`` is also measured: each lane waits until its message was delivered to the
consumer too (a whole durable hop per lane, like a task that must be picked up).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from .childio import emit, run_child
from .stats import percentile

QUEUE = "bench-durable"
BODY = bytes(range(200))  # 200 bytes, like the routing payloads


def missing_reason() -> str | None:
    try:
        from tests.support import rabbitmq
    except ImportError as exc:  # run outside the repository
        return f"tests/support/rabbitmq.py not importable: {exc}"
    why = rabbitmq.missing_reason()
    if why:
        return why
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        return "aio-pika is not installed (pip install aio-pika)"
    return None


async def _measure(url: str, inflight: int, warmup: float, duration: float, closed_loop: bool) -> dict[str, Any]:
    import aio_pika

    pub = await aio_pika.connect(url, timeout=10)
    sub = await aio_pika.connect(url, timeout=10)
    try:
        pch = await pub.channel(publisher_confirms=True)
        q_name = f"{QUEUE}-{inflight}-{'loop' if closed_loop else 'open'}"
        await pch.declare_queue(q_name, durable=True)
        sch = await sub.channel()
        await sch.set_qos(prefetch_count=256)
        squeue = await sch.declare_queue(q_name, durable=True)
        state = {"measuring": False, "stop": False, "confirmed": 0, "consumed": 0, "published": 0}
        waiting: dict[str, asyncio.Future[float]] = {}
        latencies: list[float] = []
        loop = asyncio.get_running_loop()

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            await msg.ack()
            if state["measuring"]:
                state["consumed"] += 1
            fut = waiting.pop(msg.message_id or "", None)
            if fut is not None and not fut.done():
                fut.set_result(time.perf_counter())

        tag = await squeue.consume(on_message)
        ex = pch.default_exchange
        seq = 0

        async def lane() -> None:
            nonlocal seq
            while not state["stop"]:
                seq += 1
                mid = f"{inflight}-{seq}"
                fut: asyncio.Future[float] | None = loop.create_future() if closed_loop else None
                if fut is not None:
                    waiting[mid] = fut
                t0 = time.perf_counter()
                await ex.publish(
                    aio_pika.Message(BODY, message_id=mid, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=q_name,
                    mandatory=False,
                )
                if fut is not None:
                    await fut
                if state["measuring"]:
                    state["confirmed"] += 1
                    latencies.append(time.perf_counter() - t0)

        lanes = [asyncio.create_task(lane()) for _ in range(inflight)]
        try:
            await asyncio.sleep(warmup)
            state["measuring"] = True
            t0 = time.perf_counter()
            await asyncio.sleep(duration)
            state["measuring"] = False
            elapsed = time.perf_counter() - t0
        finally:
            state["stop"] = True
            await asyncio.wait_for(asyncio.gather(*lanes, return_exceptions=True), 30)
        for t in lanes:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        backlog = (await pch.declare_queue(q_name, durable=True, passive=True)).declaration_result.message_count
        await squeue.cancel(tag)
        n = state["confirmed"]
        return {
            "inflight": inflight,
            "closed_loop": closed_loop,
            "messages": n,
            "seconds": elapsed,
            "per_s": n / elapsed,
            "consumed_per_s": state["consumed"] / elapsed,
            "backlog_at_end": backlog,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
        }
    finally:
        await asyncio.gather(pub.close(), sub.close(), return_exceptions=True)


async def measure_all(inflight: list[int], warmup: float, duration: float, work: Path) -> dict[str, Any]:
    """Start a private broker in ``work``, measure each N (open, then closed loop), stop it."""
    from tests.support import rabbitmq

    epmd = rabbitmq.Epmd()
    broker = rabbitmq.RabbitMQ(work / "rabbitmq", epmd)
    out: dict[str, Any] = {"results": [], "closed_loop": []}
    t0 = time.perf_counter()
    try:
        await asyncio.to_thread(epmd.start, 15.0)
        await asyncio.to_thread(broker.start, 90.0)
        out["broker_start_s"] = time.perf_counter() - t0
        out["node"] = broker.node
        for n in inflight:
            out["results"].append(await _measure(broker.url, n, warmup, duration, closed_loop=False))
            out["closed_loop"].append(await _measure(broker.url, n, warmup, duration, closed_loop=True))
    finally:
        await asyncio.to_thread(broker.stop, 30.0)
        await asyncio.to_thread(epmd.stop)
    return out


async def _main(args: argparse.Namespace) -> None:
    # SIGTERM (the harness ending this child) cancels the run, so the broker is still stopped
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    why = missing_reason()
    if why:
        emit("result", missing=why)
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="orchgpt-bench-rabbit-"))
    res = await measure_all([int(x) for x in args.inflight.split(",")], args.warmup, args.duration, work)
    emit("result", **res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inflight", default="1,64")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--work", default="", help="the broker's directory (default: a new temp dir)")
    ap.add_argument("--cap", type=float, default=300.0, help="wall-clock cap of the process")
    args = ap.parse_args()
    run_child(lambda: _main(args), args.cap)


if __name__ == "__main__":
    main()
