"""Benchmark child processes: start pinned to CPUs, talk JSON lines, always end them.

A child prints one JSON object per line on stdout ({"event": ..., ...}) and
reads commands the same way on stdin; it exits when its stdin closes, so a
crashed parent never leaves children behind. Each child runs in its own
session (process group) so that whatever it spawns ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BenchError
from .placement import ALL_CPUS

REPO_ROOT = Path(__file__).resolve().parent.parent


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # gRPC's own logging would go to stderr; keep it quiet unless asked.
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    if extra:
        env.update(extra)
    return env


def raise_fd_limit() -> None:
    """Many connections need many descriptors: soft limit up to the hard one (children inherit it)."""
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Child:
    """One running child process."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.pid = proc.pid
        self.exits_on_eof = True  # False for programs that do not read stdin (the daemon)

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        cpus: set[int] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log = log_path.open("ab")

        try:
            # No preexec_fn: Python code run between fork and exec in a process where gRPC
            # is busy makes gRPC's fork handlers abort the child (or the parent) with
            # "ev_epoll1_linux.cc: Check failed: next_worker->state == KICKED".
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=child_env(env),
                cwd=str(cwd or REPO_ROOT),
                start_new_session=True,
                limit=1 << 22,
            )
        finally:
            log.close()
        # Pinned at once, while the child is still starting its interpreter (one thread);
        # not pinned means every CPU (not the harness's own).
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, cpus or ALL_CPUS)
        return cls(name, proc, log_path)

    @classmethod
    async def python(
        cls,
        name: str,
        module: str,
        args: Sequence[str],
        log_dir: Path,
        cpus: set[int] | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> Child:
        return await cls.start(name, [python, "-m", module, *args], log_dir, cpus, env)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """Read lines until a JSON line whose "event" is ``event`` (or "error")."""
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise BenchError(
                    f"{self.name}: no {event!r} within {timeout:.0f}s; its log ends with:\n{self.log_tail()}"
                )
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                code = await self._exit_code(2.0)
                raise BenchError(
                    f"{self.name} exited (code {code}) before {event!r}; its log ends with:\n{self.log_tail()}"
                )
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("event") == "error":
                raise BenchError(f"{self.name}: {msg.get('message')}")
            if msg.get("event") == event:
                return msg

    async def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await asyncio.wait_for(self.proc.stdin.drain(), 5)

    async def _exit_code(self, timeout: float) -> int | None:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None

    async def stop(self, timeout: float = 5.0) -> None:
        """Close stdin (the child's cue to exit), then SIGTERM, then SIGKILL its group."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            if self.exits_on_eof and await self._exit_code(min(timeout, 2.0)) is not None:
                self._kill_group(signal.SIGKILL)  # whatever it spawned
                return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.returncode is not None:
                break
            self._kill_group(sig)
            await self._exit_code(wait)
        self._kill_group(signal.SIGKILL)

    def _kill_group(self, sig: signal.Signals) -> None:
        # The child leads its own session: its pgid is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


class Children:
    """Every child of a phase; ``async with`` ends them all, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Child] = []

    async def python(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        cpus: set[int] | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> Child:
        child = await Child.python(name, module, args, self.log_dir, cpus, python, env)
        self.items.append(child)
        return child

    async def start(
        self, name: str, argv: Sequence[str], cpus: set[int] | None = None, env: dict[str, str] | None = None
    ) -> Child:
        child = await Child.start(name, argv, self.log_dir, cpus, env)
        self.items.append(child)
        return child

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.stop() for c in reversed(self.items)), return_exceptions=True)
