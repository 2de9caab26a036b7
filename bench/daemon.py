"""Start the real orchgpt daemon (`python -m orchgpt serve`) as a benchmark child."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from . import placement
from .children import Child, Children
from .errors import BenchError
from .routing import Router
from .wire import ORCHGPT


async def start_orchgpt(
    children: Children,
    certs: Path,
    data_dir: Path,
    *,
    spawn: bool = False,
    name: str = "orchgpt",
    extra: list[str] | None = None,
    timeout: float = 60.0,
    cpus: set[int] | None = placement.ROUTER_CPUS,
    default_limits: bool = False,
    src: Path | None = None,
) -> tuple[Router, Child]:
    """Run ``orchgpt serve`` on 127.0.0.1:0 with the bench certificates; wait until it listens.
    ``default_limits`` keeps the per-agent rate and events-per-task limits at their defaults;
    ``src``: run the orchgpt package found there (another checkout: old code against new)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port_file = data_dir / "port"
    port_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "orchgpt",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--certs",
        str(certs),
        "--data-dir",
        str(data_dir),
        "--port-file",
        str(port_file),
        "--local-model",
        "off",
        "--grace-period",
        "1",
        "--log-format",
        "json",
    ]
    if not default_limits:
        argv += [
            # the benchmark drives agents at full speed with many events per task: the per-peer
            # message rate and events-per-task limits (docs/security-limits.md) are off here
            "--agent-messages-per-second",
            "0",
            "--max-events-per-task",
            "0",
        ]
    if src is not None:
        argv[1:3] = ["-c", f"import sys; sys.path.insert(0, {str(src)!r}); from orchgpt.__main__ import main; main()"]
    if not spawn:
        argv.append("--no-spawn")
    argv += extra or []
    child = await children.start(name, argv, cpus=cpus)
    child.exits_on_eof = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if port_file.exists():
            text = port_file.read_text().strip()
            if text:
                return Router(ORCHGPT, f"127.0.0.1:{int(text)}", child.pid, certs), child
        if child.proc.returncode is not None:
            raise BenchError(
                f"orchgpt exited (code {child.proc.returncode}) before listening; "
                f"its log ends with:\n{child.log_tail()}"
            )
        if loop.time() > deadline:
            raise BenchError(f"orchgpt did not listen within {timeout:.0f}s; its log ends with:\n{child.log_tail()}")
        await asyncio.sleep(0.02)
