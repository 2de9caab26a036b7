"""Local agents: orchgpt starts `agentd` subprocesses for built-in types and supervises them.

Each spawned agent gets its own certificate (issued by the mesh CA, written
0600 under DATA_DIR/agents), is restarted with backoff when it crashes, is
stopped on TERMINATE and at shutdown, and dies with orchgpt: agentd sets
PR_SET_PDEATHSIG itself when ORCHGPT_PARENT_PID is set (no preexec_fn here: it
would force a plain fork(), and gRPC's fork handlers can abort the child), so
that a killed daemon leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import journal, logs
from .certs import CA
from .mesh import LOCAL_PREFIX
from .models import TaskResult

log = logs.get("orchgpt.spawner")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
JOURNAL_SUFFIX = journal.SUFFIX


def read_journals(directory: Path) -> dict[str, list[TaskResult]]:
    """Results that spawned agents of a previous orchgpt wrote before it died (by agent id)."""
    return journal.read_dir(directory, LOCAL_PREFIX)


def remove_journals(directory: Path) -> None:
    journal.remove_dir(directory, LOCAL_PREFIX)


FAILS_BEFORE_GIVING_UP = 3  # crashes in a row before the agent ever registered


@dataclass
class LocalAgent:
    name: str
    agent_type: str
    proc: asyncio.subprocess.Process | None = None
    registered: bool = False
    stopping: bool = False
    fails: int = 0
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    supervisor: asyncio.Task[None] | None = None


class Spawner:
    def __init__(
        self,
        ca: CA,
        cert_dir: Path,
        orchestrator: Callable[[], str],
        max_local: int = 8,
        known_types: frozenset[str] = frozenset(),
        env: dict[str, str] | None = None,
        on_give_up: Callable[[str, str], None] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.ca = ca
        self.cert_dir = cert_dir
        self.orchestrator = orchestrator
        self.max_local = max_local
        self.known_types = known_types
        self.env = env or {}
        self.on_give_up = on_give_up
        self.log_dir = log_dir
        self.agents: dict[str, LocalAgent] = {}
        self.enabled = True

    # ---- SpawnerPort
    def can_spawn(self, agent_type: str) -> bool:
        return self.enabled and agent_type in self.known_types and len(self.agents) < self.max_local

    def starting(self, agent_type: str) -> int:
        return sum(1 for a in self.agents.values() if a.agent_type == agent_type and not a.registered and not a.stopping)

    def is_local(self, agent_id: str) -> bool:
        return agent_id in self.agents

    def spawn(self, agent_type: str) -> None:
        name = f"{LOCAL_PREFIX}{agent_type}-{secrets.token_hex(3)}"
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cert_dir, 0o700)
        self.ca.issue_to(self.cert_dir, name, "agent", [])
        agent = LocalAgent(name, agent_type)
        self.agents[name] = agent
        agent.supervisor = asyncio.get_running_loop().create_task(self._supervise(agent), name=f"supervise:{name}")
        log.info("agent_spawning", agent_id=name, agent_type=agent_type)

    def terminate(self, agent_id: str) -> bool:
        a = self.agents.get(agent_id)
        if a is None:
            return False
        a.stopping = True
        return True

    # ---- events from the mesh
    def registered(self, agent_id: str) -> None:
        a = self.agents.get(agent_id)
        if a is not None:
            a.registered = True
            a.fails = 0
            log.info("agent_ready", agent_id=agent_id, seconds=round(time.monotonic() - a.started_at, 3))

    # ---- supervision
    async def _start(self, a: LocalAgent) -> None:
        cmd = [
            sys.executable, "-m", "agentd", "--type", a.agent_type, "--name", a.name,
            "--orchestrator", self.orchestrator(),
            "--ca", str(self.cert_dir / "ca.pem"), "--cert", str(self.cert_dir / f"{a.name}.pem"),
            "--key", str(self.cert_dir / f"{a.name}-key.pem"),
        ]
        env = {**os.environ, **self.env, "ORCHGPT_SPAWNED": "1", "ORCHGPT_PARENT_PID": str(os.getpid()),
               "ORCHGPT_RESULTS_JOURNAL": str(self.journal_path(a.name))}
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{a.name}.log", "ab")
        try:
            a.proc = await asyncio.create_subprocess_exec(
                *cmd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=out or asyncio.subprocess.DEVNULL, stderr=out or asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()
        a.started_at = time.monotonic()
        a.registered = False

    async def _supervise(self, a: LocalAgent) -> None:
        try:
            while True:
                await self._start(a)
                assert a.proc is not None
                code = await a.proc.wait()
                if a.stopping:
                    log.info("agent_stopped", agent_id=a.name, exit_code=code)
                    break
                if a.registered or time.monotonic() - a.started_at > 30:
                    a.fails = 0
                a.fails += 1
                a.restarts += 1
                if a.fails >= FAILS_BEFORE_GIVING_UP:
                    reason = f"local {a.agent_type} agent failed to start {a.fails} times (exit code {code})"
                    last = self._last_error(a)
                    if last:
                        reason += f": {last}"
                    log.error("agent_gave_up", agent_id=a.name, exit_code=code, reason=reason)
                    a.stopping = True  # no longer counts as starting
                    if self.on_give_up is not None:
                        self.on_give_up(a.agent_type, reason)
                    break
                delay = RESTART_BACKOFF[min(a.restarts - 1, len(RESTART_BACKOFF) - 1)]
                log.warning("agent_crashed", agent_id=a.name, exit_code=code, restart_in=delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            await self._kill(a, grace=2.0)
            raise
        finally:
            self.agents.pop(a.name, None)
            for suffix in (".pem", "-key.pem", JOURNAL_SUFFIX):
                try:
                    (self.cert_dir / f"{a.name}{suffix}").unlink()
                except FileNotFoundError:
                    pass

    def _last_error(self, a: LocalAgent) -> str:
        """The agent's own last words (its log's last error line), for the user."""
        if self.log_dir is None:
            return ""
        try:
            with open(self.log_dir / f"{a.name}.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            if line.startswith("agentd:"):
                return line.removeprefix("agentd:").strip()[:300]
        return ""

    async def _kill(self, a: LocalAgent, grace: float) -> None:
        p = a.proc
        if p is None or p.returncode is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
            await asyncio.wait_for(p.wait(), grace)
        except TimeoutError:
            p.kill()
            await p.wait()
        except ProcessLookupError:
            pass

    async def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every local agent, SIGKILL what is left after ``grace``; wait for all."""
        self.enabled = False
        agents = list(self.agents.values())
        for a in agents:
            a.stopping = True
        await asyncio.gather(*(self._kill(a, grace) for a in agents), return_exceptions=True)
        for a in agents:
            if a.supervisor is not None:
                a.supervisor.cancel()
        await asyncio.gather(*(a.supervisor for a in agents if a.supervisor), return_exceptions=True)

    def journal_path(self, name: str) -> Path:
        return self.cert_dir / f"{name}{JOURNAL_SUFFIX}"

    def pids(self) -> list[int]:
        return [a.proc.pid for a in self.agents.values() if a.proc is not None]
