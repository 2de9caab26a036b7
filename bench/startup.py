"""Start-up: spawn-to-ready of a local agent, CLI start-to-prompt, and task overhead.

- spawn-to-ready: a daemon with no echo agent gets an echo task; the time from the
  request to the task's ASSIGNED event (the new agentd registered). Baseline: a
  minimal mutual-TLS agent (bench.peer echo) started against the baseline relay,
  from process start to REGISTERED.
- CLI start-to-prompt: `python -m orchgpt_cli --exit-at-prompt` in a pseudo-terminal
  until "autogpt> " is on the screen, against `python -c "import prompt_toolkit, grpc"`
  to exit; interleaved repetitions, medians.
- task overhead: echo tasks per second through create, assign, complete and stored.

The start-up phase is not pinned: a spawned agent starts like it would on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .children import Children, child_env
from .errors import BenchError

PROMPT = b"autogpt>"  # the prompt as rendered (styled: the space follows an escape code)


async def minimal_agent_ready(
    children: Children, router_target: str, certs: Path, reps: int, name: str = "bench-b"
) -> list[float]:
    """Seconds from spawning a minimal TLS agent (bench.peer echo) to its REGISTERED."""
    out = []
    for rep in range(reps):
        t0 = time.perf_counter()
        c = await children.python(
            f"minimal-agent-{rep}",
            "bench.peer",
            ["echo", "--mode", "baseline", "--target", router_target, "--certs", str(certs), "--name", name],
        )
        await c.expect("ready", 30)
        out.append(time.perf_counter() - t0)
        await c.stop()
    return out


def _until_prompt(argv: list[str], env: dict[str, str], timeout: float) -> float:
    """Run argv on a pty; seconds until PROMPT appears. The process is always ended."""
    master, slave = pty.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
    )
    os.close(slave)
    seen = b""
    try:
        while True:
            left = timeout - (time.perf_counter() - t0)
            if left <= 0:
                raise BenchError(
                    f"no prompt from {' '.join(argv)} within {timeout:.0f}s; the screen shows: {seen[-300:]!r}"
                )
            r, _, _ = select.select([master], [], [], min(left, 0.5))
            if not r:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the pty closed: the process exited
                data = b""
            if not data:
                raise BenchError(f"{' '.join(argv)} exited before its prompt: {seen[-300:]!r}")
            seen += data
            if PROMPT in seen:
                return time.perf_counter() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9) if proc.poll() is None else None
        with contextlib.suppress(Exception):
            proc.wait(5)
        os.close(master)


def _run_to_exit(argv: list[str], env: dict[str, str], timeout: float) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, timeout=timeout, capture_output=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed: {r.stderr.decode(errors='replace')[-300:]}")
    return time.perf_counter() - t0


def cli_start(target: str, certs: Path, history: Path, reps: int) -> dict[str, Any]:
    env = child_env(
        {
            "ORCHGPT_ADDRESS": target,
            "ORCHGPT_CERTS": str(certs),
            "ORCHGPT_CLI_HISTORY": str(history),
            "TERM": "xterm",
            "COLUMNS": "100",
            "LINES": "30",
        }
    )
    cli = [sys.executable, "-m", "orchgpt_cli", "--exit-at-prompt"]
    base = [sys.executable, "-c", "import prompt_toolkit, grpc"]
    _run_to_exit(base, env, 60)  # warm the page cache for both
    _until_prompt(cli, env, 60)
    cli_s, base_s = [], []
    for _ in range(reps):
        base_s.append(_run_to_exit(base, env, 60))
        cli_s.append(_until_prompt(cli, env, 60))
    return {
        "cli_s": cli_s,
        "import_s": base_s,
        "cli_median_s": statistics.median(cli_s),
        "import_median_s": statistics.median(base_s),
    }


async def spawn_to_ready(
    children: Children, router_target: str, router_pid: int, certs: Path, reps: int
) -> list[dict[str, Any]]:
    c = await children.python(
        "spawn-client",
        "bench.mesh_client",
        [
            "spawn",
            "--target",
            router_target,
            "--certs",
            str(certs),
            "--reps",
            str(reps),
            "--router-pid",
            str(router_pid),
        ],
    )
    out = [await c.expect("result", 90) for _ in range(reps)]
    await c.expect("done", 30)
    return out


async def task_overhead(
    children: Children,
    router_target: str,
    router_pid: int,
    certs: Path,
    count: int,
    inflight: list[int],
    cpus: set[int] | None,
    submit: str = "single",
) -> list[dict[str, Any]]:
    """``submit``: "single" (a Submit call per task) or "stream" (one SubmitStream, results only)."""
    c = await children.python(
        "tasks-client" if submit == "single" else f"tasks-client-{submit}",
        "bench.mesh_client",
        [
            "tasks",
            "--submit",
            submit,
            "--target",
            router_target,
            "--certs",
            str(certs),
            "--count",
            str(count),
            "--inflight",
            ",".join(map(str, inflight)),
            "--router-pid",
            str(router_pid),
        ],
        cpus=cpus,
    )
    out = [await c.expect("result", 150) for _ in inflight]
    await c.expect("done", 30)
    return out


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
