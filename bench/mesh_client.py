"""Client-side benchmark roles that use the real orchgpt client (orchgpt.client.MeshClient).

    python -m bench.mesh_client spawn --target HOST:PORT --certs DIR --reps 3
    python -m bench.mesh_client tasks --target HOST:PORT --certs DIR --count 200 --inflight 1,16

spawn: submit an echo task to a daemon with no echo agent; spawn-to-ready is the
time from the request to the ASSIGNED event (the mesh assigns the queued task
in the same step as it registers the new agent); then TERMINATE the echo
agents and wait until none is listed, and again.

tasks: echo tasks through create, assign, complete and stored, N in flight;
every result is checked (SUCCEEDED, output == input) and a sample is read
back from the store with GetTask. ``--submit single`` (default): a Submit call per task;
``--submit stream``: every task on one SubmitStream call (results only), N lanes each
waiting for its task's RESULT before submitting the next. ``--action status``: STATUS tasks,
which the daemon answers itself (no agent): the cost of the submission path alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from orchgpt.client import MeshClient
from orchgpt.client_submit import SubmitStream
from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, EventKind, TaskState

from .childio import emit, run_child
from .procstat import cpu_seconds
from .stats import percentile
from .tlsdir import client_paths


def _client(args: argparse.Namespace) -> MeshClient:
    return MeshClient(args.target, client_paths(Path(args.certs)), timeout=30)


async def _run_echo(
    client: MeshClient, text: str, action: Action = Action.RUN
) -> tuple[float, float, str, TaskState | None]:
    """Submit one echo task; returns (seconds to ASSIGNED, seconds to RESULT, output, state)."""
    t0 = time.perf_counter()
    assigned = done = 0.0
    output, state = "", None
    async for ev in client.submit(Command(agent_type="echo", action=action, input=text)):
        if ev.kind == EventKind.STATUS and ev.state == TaskState.ASSIGNED and not assigned:
            assigned = time.perf_counter() - t0
        elif ev.kind == EventKind.RESULT:
            done = time.perf_counter() - t0
            state = ev.result.state if ev.result else ev.state
            output = ev.result.output if ev.result else ev.text
            break
    return assigned, done, output, state


async def _first_spawn(client: MeshClient, text: str) -> tuple[float, float, str, TaskState | None]:
    """_run_echo, retried while the daemon still counts the terminated agent against its
    local-agent limit (it refuses at once with FAILED_PRECONDITION until the process exited)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return await _run_echo(client, text)
        except ClientError as exc:
            if exc.code != "FAILED_PRECONDITION" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def spawn(args: argparse.Namespace) -> None:
    client = _client(args)
    try:
        await client.check()
        for rep in range(args.reps):
            if await client.list_agents("echo"):
                raise RuntimeError("an echo agent is already connected: spawn-to-ready needs a fresh one")
            assigned, done, output, state = await asyncio.wait_for(_first_spawn(client, f"ready {rep}"), 60)
            if state != TaskState.SUCCEEDED or output != f"ready {rep}":
                raise RuntimeError(f"the echo task ended {state}: {output!r}")
            emit("result", rep=rep, spawn_to_ready_s=assigned, spawn_to_result_s=done)
            # stop the agent so that the next repetition spawns a fresh one
            async for _ in client.submit(Command(agent_type="echo", action=Action.TERMINATE)):
                pass
            deadline = time.monotonic() + 20
            while await client.list_agents("echo"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the echo agent was still listed 20s after TERMINATE")
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # its process is gone, not just unlisted
        emit("done")
    finally:
        await client.close()


async def tasks(args: argparse.Namespace) -> None:
    client = _client(args)
    try:
        await client.check()
        action = Action.STATUS if args.action == "status" else Action.RUN
        await asyncio.wait_for(_run_echo(client, "warm-up", action), 60)  # the echo agent is up
        for inflight in [int(x) for x in args.inflight.split(",")]:
            emit("result", **await asyncio.wait_for(_tasks(client, args, inflight), args.cap_phase))
        emit("done")
    finally:
        await client.close()


async def _tasks(client: MeshClient, args: argparse.Namespace, inflight: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    next_i = 0
    stream: SubmitStream | None = None
    # --action status: the daemon answers the task itself (no agent): the submission path alone
    action = Action.STATUS if args.action == "status" else Action.RUN

    async def one(text: str) -> tuple[str, TaskState | None]:
        if stream is None:
            _, _, output, state = await _run_echo(client, text, action)
            return output, state
        ev = await stream.run(Command(agent_type="echo", action=action, input=text))
        return (ev.result.output, ev.result.state) if ev.result else (ev.text, ev.state)

    async def lane() -> None:
        nonlocal next_i
        while next_i < args.count:
            i = next_i
            next_i += 1
            text = f"task {inflight}-{i}"
            t0 = time.perf_counter()
            output, state = await one(text)
            latencies.append(time.perf_counter() - t0)
            if state != TaskState.SUCCEEDED or (output != text and action == Action.RUN):
                failures.append(f"{text}: {state} {output!r}")

    async with contextlib.AsyncExitStack() as stack:
        if args.submit == "stream":
            stream = await stack.enter_async_context(client.submit_stream(results_only=True))
            await stream.run(Command(agent_type="echo", action=action, input="stream warm-up"))
        cpu0 = cpu_seconds(args.router_pid) if args.router_pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(args.router_pid) if args.router_pid else 0.0
    if failures:
        raise RuntimeError(f"{len(failures)} echo tasks failed, e.g. {failures[0]}")
    # stored: the newest tasks are in the store, finished, with their output
    stored = await client.list_tasks(limit=min(args.count, 20))
    bad = [t.task_id for t in stored if t.state != TaskState.SUCCEEDED or t.result is None]
    if len(stored) < min(args.count, 20) or bad:
        raise RuntimeError(f"tasks not stored as succeeded: {bad or 'too few listed'}")
    n = len(latencies)
    return {
        "inflight": inflight,
        "submit": args.submit,
        "action": args.action,
        "tasks": n,
        "seconds": elapsed,
        "tasks_per_s": n / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "router_cpu_us_per_task": (cpu1 - cpu0) / n * 1e6 if args.router_pid else None,
        "checked_stored": len(stored),
    }


ROLES = {"spawn": spawn, "tasks": tasks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--target", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--inflight", default="1,16")
    ap.add_argument(
        "--submit", choices=("single", "stream"), default="single", help="tasks: Submit per task, or one SubmitStream"
    )
    ap.add_argument(
        "--action",
        choices=("run", "status"),
        default="run",
        help="tasks: run (an echo agent runs each) or status (the daemon answers at once: the submission path alone)",
    )
    ap.add_argument("--router-pid", type=int, default=0)
    ap.add_argument("--cap-phase", type=float, default=120.0)
    ap.add_argument("--cap", type=float, default=300.0)
    args = ap.parse_args()
    if not args.target.startswith("127.0.0.1:"):
        ap.error("benchmarks only talk to 127.0.0.1")
    run_child(lambda: ROLES[args.role](args), args.cap)


if __name__ == "__main__":
    main()
