"""Which built-in agent types this host can run: asked of the agent program, never imported.

The daemon does not import the agent package. It runs local agents as ``AGENT_COMMAND
--type T`` (orchgpt/spawner.py) and asks the same program ``--list-types`` once at start;
the ``agent_types`` setting (ORCHGPT_AGENT_TYPES, ``--agent-types``) names them instead.
"""

from __future__ import annotations

import asyncio
import sys

from . import logs
from .mesh_registry import AGENT_TYPE_RE

log = logs.get("orchgpt.agent_types")

AGENT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "agentd")
LIST_TIMEOUT = 60.0  # seconds; a slow first import on a loaded host, never a hang


def parse(text: str) -> frozenset[str]:
    """Agent type names, one a line (or separated by commas); anything else is ignored."""
    names = (n.strip() for line in text.splitlines() for n in line.split(","))
    return frozenset(n for n in names if AGENT_TYPE_RE.match(n))


def configured(value: str) -> frozenset[str] | None:
    """The types the setting names, or None when it is empty (then ask the agent program)."""
    return parse(value) if value.strip() else None


async def discover(command: tuple[str, ...] = AGENT_COMMAND, timeout: float = LIST_TIMEOUT) -> frozenset[str]:
    """The types ``command --list-types`` prints; none (with a warning) when it cannot tell."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            "--list-types",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        log.warning("agent_types_unknown", command=" ".join(command), error=str(exc))
        return frozenset()
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("agent_types_unknown", command=" ".join(command), error=f"no answer in {timeout:g}s")
        return frozenset()
    if proc.returncode != 0:
        log.warning(
            "agent_types_unknown",
            command=" ".join(command),
            exit_code=proc.returncode,
            error=err.decode(errors="replace").strip()[-300:],
        )
        return frozenset()
    return parse(out.decode(errors="replace"))
