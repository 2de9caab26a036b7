"""Bench peers: the processes on the other side of the router.

    python -m bench.peer echo    --mode M --target HOST:PORT --certs DIR --name NAME
    python -m bench.peer driver  ... --peer AGENT_ID --inflight 1,64 --duration 3
    python -m bench.peer emitters ... --prefix tok- --agents 8 --events 2000
    python -m bench.peer watcher ... --expect N

Each prints JSON lines (see children.py): "ready" once connected, then
"result" lines. The code is the same for the baseline relay and orchgpt;
only the framing differs (wire.Link).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.wire.coalesce import deltas

from . import wire
from .childio import Commands, emit, run_child
from .procstat import cpu_seconds
from .stats import percentile

PAYLOAD = bytes(range(200))  # 200-byte payloads
TOKEN_TEXT = "tok "


def _link(args: argparse.Namespace, name: str, own_connection: bool = False) -> wire.Link:
    channel = wire.open_channel(args.target, paths_for(Path(args.certs), name), own_connection)
    return wire.Link(channel, args.mode, name)


async def _until_closed(commands: Commands, *tasks: asyncio.Task[Any]) -> None:
    """Wait until stdin closes or a task fails; re-raise the failure."""
    closed = asyncio.create_task(commands.closed.wait())
    done, _ = await asyncio.wait([closed, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for t in (closed, *tasks):
        if t not in done:
            t.cancel()
    for t in done:
        if t is not closed:
            t.result()


# ---- echo: answer every COMMAND with its payload, correlation_id = its id
async def echo(args: argparse.Namespace) -> None:
    commands = Commands()
    link = _link(args, args.name)
    agent_id = await link.register(agent_type=args.agent_type)
    emit("ready", agent_id=agent_id, heartbeat_s=link.heartbeat_s)
    name, COMMAND = link.name, pb.COMMAND

    async def loop() -> None:
        while True:
            for env in await link.recv():
                if env.type != COMMAND:
                    continue
                await link.send(
                    pb.Envelope(
                        id=wire.next_id(),
                        sender=name,
                        recipient=pb.Address(agent_id=env.sender),
                        type=COMMAND,
                        correlation_id=env.id,
                        payload=env.payload,
                    )
                )

    try:
        await _until_closed(commands, asyncio.create_task(loop()))
    finally:
        await link.close()


# ---- driver: closed-loop round trips with N in flight
async def driver(args: argparse.Namespace) -> None:
    commands = Commands()
    link = _link(args, args.name)
    await link.register(agent_type="bench-driver")
    emit("ready", agent_id=link.agent_id)
    loop = asyncio.get_running_loop()
    pending: dict[str, asyncio.Future[float]] = {}

    async def reader() -> None:
        while True:
            for env in await link.recv():
                fut = pending.pop(env.correlation_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

    read_task = asyncio.create_task(reader())
    try:
        # {"cmd": "measure", "inflight": N, "warmup": S, "duration": S} -> "result"; {"cmd": "exit"}
        while True:
            cmd = await commands.get(3600)
            if cmd is None or cmd.get("cmd") == "exit":
                return
            if cmd.get("cmd") == "measure":
                inflight, warmup, duration = int(cmd["inflight"]), float(cmd["warmup"]), float(cmd["duration"])
                result = await asyncio.wait_for(
                    _round_trips(args, link, pending, loop, inflight, read_task, warmup, duration),
                    warmup + duration + 30,
                )
                emit("result", **result)
    finally:
        read_task.cancel()
        await link.close()


async def _round_trips(
    args: argparse.Namespace,
    link: wire.Link,
    pending: dict[str, asyncio.Future[float]],
    loop: asyncio.AbstractEventLoop,
    inflight: int,
    read_task: asyncio.Task[None],
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    latencies: list[float] = []
    state = {"measuring": False, "stop": False}
    name, peer, COMMAND = link.name, args.peer, pb.COMMAND

    async def lane() -> None:
        while not state["stop"]:
            eid = wire.next_id()
            fut: asyncio.Future[float] = loop.create_future()
            pending[eid] = fut
            t0 = time.perf_counter()
            await link.send(
                pb.Envelope(id=eid, sender=name, recipient=pb.Address(agent_id=peer), type=COMMAND, payload=PAYLOAD)
            )
            t1 = await fut
            if state["measuring"]:
                latencies.append(t1 - t0)

    frames0 = (link.frames_out, link.frames_in)
    lanes = [asyncio.create_task(lane()) for _ in range(inflight)]
    try:
        await _sleep_or_fail(warmup, [read_task, *lanes])
        cpu0 = cpu_seconds(args.router_pid) if args.router_pid else 0.0
        t0 = time.perf_counter()
        f0 = (link.frames_out, link.frames_in)
        state["measuring"] = True
        await _sleep_or_fail(duration, [read_task, *lanes])
        state["measuring"] = False
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(args.router_pid) if args.router_pid else 0.0
        f1 = (link.frames_out, link.frames_in)
    finally:
        state["stop"] = True
        # let the lanes finish their last round trip, then drop what is left
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*lanes, return_exceptions=True), 5)
        for t in lanes:
            t.cancel()
        pending.clear()
    n = len(latencies)
    if n == 0:
        raise RuntimeError(f"no round trip completed in {duration}s with {inflight} in flight")
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
        "frames_out": f1[0] - f0[0],
        "frames_in": f1[1] - f0[1],
        "warmup_frames": f0[0] - frames0[0],
    }


async def _sleep_or_fail(seconds: float, tasks: list[asyncio.Task[Any]]) -> None:
    """Sleep, but raise at once if one of the tasks failed."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


# ---- emitters: N agents streaming token-delta TASK_EVENTs
async def emitters(args: argparse.Namespace) -> None:
    commands = Commands()
    links = [_link(args, f"{args.prefix}{i}") for i in range(args.agents)]
    await asyncio.gather(*(lk.register(agent_type=args.agent_type) for lk in links))
    emit("ready", agent_ids=[lk.agent_id for lk in links])

    async def stream(link: wire.Link, task_id: str, correlation_id: str = "") -> None:
        name = link.name
        # One envelope sent --events times: the emitters spend no time building messages
        # (the routers do not look at event ids), so the router is what is measured.
        env = pb.Envelope(
            id=wire.next_id(),
            sender=name,
            type=pb.TASK_EVENT,
            task_id=task_id,
            event=pb.TaskEvent(task_id=task_id, token=pb.TokenEvent(text=TOKEN_TEXT), agent_id=link.agent_id),
        )
        send = link.send
        for _ in range(args.events):
            await send(env)
        if correlation_id:  # finish the task (orchgpt)
            await link.send(
                pb.Envelope(
                    id=wire.next_id(),
                    sender=name,
                    type=pb.REPLY,
                    task_id=task_id,
                    correlation_id=correlation_id,
                    reply=pb.Reply(
                        result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, output="ok", agent_id=link.agent_id)
                    ),
                )
            )

    streams: set[asyncio.Task[None]] = set()

    async def on_runs(link: wire.Link) -> None:
        # orchgpt: each RUN envelope is a task whose events we stream
        while True:
            for env in await link.recv():
                if env.type == pb.RUN:
                    t = asyncio.create_task(stream(link, env.task.task_id or env.task_id, env.id))
                    streams.add(t)
                    t.add_done_callback(streams.discard)

    try:
        if args.mode == wire.ORCHGPT:
            runners = [asyncio.create_task(on_runs(lk)) for lk in links]
            await _until_closed(commands, *runners)
        else:
            await commands.expect("go", 120)
            await asyncio.gather(*(stream(lk, f"task-{lk.name}") for lk in links))
            emit("sent")
            await commands.closed.wait()
    finally:
        await asyncio.gather(*(lk.close() for lk in links))


# ---- watcher: a subscribed client counting token events
async def watcher(args: argparse.Namespace) -> None:
    """Count TOKEN events; the rate is measured over a window that opens ``--warmup``
    seconds after the first event and lasts ``--duration`` seconds (or until every
    expected event arrived)."""
    commands = Commands()
    channel = wire.open_channel(args.target, paths_for(Path(args.certs), args.name))
    call = wire.watch_call(channel, args.mode)
    # A router may send no headers before the first event: wait a little beside the call
    # (never cancel wait_for_connection: that would cancel the call).
    await asyncio.wait([asyncio.create_task(call.wait_for_connection())], timeout=1.0)
    await asyncio.sleep(0.3)  # let the subscription settle on the router
    emit("ready")
    batching = args.mode == wire.ORCHGPT
    st: dict[str, Any] = {
        "n": 0,
        "frames": 0,
        "first": 0.0,
        "last": 0.0,
        "ws": 0.0,
        "n_ws": 0,
        "cpu_ws": 0.0,
        "f_ws": 0,
        "cpu_first": 0.0,
    }
    router = args.router_pid

    async def count() -> None:
        while st["n"] < args.expect:
            msg = await call.read()
            if msg is wire.grpc.aio.EOF:
                raise RuntimeError("the router ended the watch stream")
            envs = msg.envelopes if batching else (msg,)
            # a coalesced TASK_EVENT (orchgpt.wire.coalesce) stands for a range of deltas
            got = sum(deltas(e.event) for e in envs if e.event.HasField("token"))
            if not got:
                continue
            now = time.perf_counter()
            if st["n"] == 0:
                st["first"] = now
                st["cpu_first"] = cpu_seconds(router) if router else 0.0
            elif not st["ws"] and now - st["first"] >= args.warmup:
                st.update(ws=now, n_ws=st["n"], f_ws=st["frames"], cpu_ws=cpu_seconds(router) if router else 0.0)
            st["n"] += got
            st["frames"] += 1
            st["last"] = now
            if st["ws"] and now - st["ws"] >= args.duration:
                return

    task = asyncio.create_task(count())
    done, _ = await asyncio.wait([task], timeout=args.cap_events)
    if task in done:
        task.result()  # raise what went wrong
    else:
        task.cancel()
    cpu_end = cpu_seconds(router) if router else 0.0
    n = st["n"]
    if n < 2:
        raise RuntimeError(f"the watcher received {n} token events in {args.cap_events:.0f}s")
    if st["ws"] and st["last"] > st["ws"]:  # the measured window
        events, span, frames = n - st["n_ws"], st["last"] - st["ws"], st["frames"] - st["f_ws"]
        cpu = cpu_end - st["cpu_ws"]
    else:  # everything arrived within the warm-up: first to last
        events, span, frames = n - 1, max(st["last"] - st["first"], 1e-9), st["frames"]
        cpu = cpu_end - st["cpu_first"]
    emit(
        "result",
        events=events,
        received=n,
        expected=args.expect,
        complete=n >= args.expect,
        seconds=span,
        eps=events / span,
        frames=frames,
        events_per_frame=events / frames if frames else 0.0,
        router_cpu_s=cpu,
        router_cpu_us_per_event=cpu / events * 1e6 if router else None,
    )
    call.cancel()
    await commands.expect("exit", 60)


# ---- idlers: many idle agents, each its own certificate and TLS connection, heartbeating
async def idlers(args: argparse.Namespace) -> None:
    """Commands: {"cmd": "prepare", "count": K} issues K more agent certificates (untimed);
    {"cmd": "go"} registers them (with --concurrency at a time) and reports the time."""
    from orchgpt.certs import CA, CertPaths

    commands = Commands()
    ca = CA.load(Path(args.certs))
    ca_path = Path(args.certs) / "ca.pem"
    pem_dir = Path(args.pem_dir)
    pem_dir.mkdir(parents=True, exist_ok=True)
    links: list[wire.Link] = []
    loops: list[asyncio.Task[None]] = []
    prepared: list[CertPaths] = []
    emit("ready")

    async def keep_alive(link: wire.Link) -> None:
        with contextlib.suppress(wire.LinkClosed, asyncio.CancelledError):
            while True:
                await link.recv()  # answers PINGs
        raise RuntimeError(f"{link.name}: the router closed the stream of an idle agent")

    try:
        while True:
            cmd = await commands.get(3600)
            if cmd is None:
                return
            if cmd.get("cmd") == "prepare":
                prepared = []
                for _ in range(int(cmd["count"])):
                    name = f"{args.prefix}{len(links) + len(prepared)}"
                    cert, key = ca.issue(name, "agent")
                    paths = CertPaths(ca_path, pem_dir / f"{name}.pem", pem_dir / f"{name}-key.pem")
                    paths.cert.write_bytes(cert)
                    paths.key.write_bytes(key)
                    prepared.append(paths)
                emit("prepared", count=len(prepared))
            elif cmd.get("cmd") == "go":
                sem = asyncio.Semaphore(args.concurrency)
                t0 = time.perf_counter()

                async def one(paths: CertPaths, sem: asyncio.Semaphore = sem) -> wire.Link:
                    async with sem:
                        t1 = time.perf_counter()
                        ch = wire.open_channel(args.target, paths, own_connection=True)
                        link = wire.Link(ch, args.mode, paths.cert.stem, queue_size=64)
                        try:
                            await link.register(agent_type="bench-idle", timeout=args.register_timeout)
                        except wire.grpc.aio.AioRpcError as exc:
                            raise RuntimeError(
                                f"registering {link.name} ended with {exc.code().name} after "
                                f"{time.perf_counter() - t1:.0f}s with {len(links)} agents of this "
                                f"process connected ({exc.details()})"
                            ) from None
                        return link

                new = await asyncio.gather(*(one(p) for p in prepared))
                elapsed = time.perf_counter() - t0
                links.extend(new)
                loops.extend(asyncio.create_task(keep_alive(lk)) for lk in new)
                prepared = []
                emit("registered", count=len(new), total=len(links), seconds=elapsed)
            for t in loops:
                if t.done():
                    t.result()
    finally:
        for t in loops:
            t.cancel()


ROLES = {"echo": echo, "driver": driver, "emitters": emitters, "watcher": watcher, "idlers": idlers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--mode", choices=wire.MODES, required=True)
    ap.add_argument("--target", required=True, help="HOST:PORT of the router (127.0.0.1 only)")
    ap.add_argument("--certs", required=True)
    ap.add_argument("--name", default="bench-a", help="certificate name (CN) of this peer")
    ap.add_argument("--agent-type", default="bench-echo")
    ap.add_argument("--peer", default="", help="driver: agent id of the echo peer")
    ap.add_argument("--warmup", type=float, default=0.5, help="watcher: seconds before the window")
    ap.add_argument("--duration", type=float, default=3.0, help="watcher: the measured window")
    ap.add_argument("--router-pid", type=int, default=0)
    ap.add_argument("--prefix", default="bench-tok-")
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--cap-events", type=float, default=30.0)
    ap.add_argument("--pem-dir", default="", help="idlers: where to write their certificates")
    ap.add_argument("--concurrency", type=int, default=32, help="idlers: registrations at a time")
    ap.add_argument(
        "--register-timeout", type=float, default=120.0, help="idlers: seconds one agent may wait for REGISTERED"
    )
    ap.add_argument("--cap", type=float, default=300.0, help="wall-clock cap of the process")
    args = ap.parse_args()
    if not args.target.startswith(("127.0.0.1:", "localhost:", "[::1]:")):
        ap.error("benchmarks only talk to loopback addresses")
    run_child(lambda: ROLES[args.role](args), args.cap)


if __name__ == "__main__":
    main()
