"""Local agents: orchgpt starts `agentd` subprocesses for built-in types and supervises them.

Each spawned agent gets its own certificate, issued by the mesh CA and written 0600
under DATA_DIR/agents/<CA fingerprint>/ together with that CA's ``ca.pem`` (written
at every start: a certificate directory belongs to one CA, so a daemon started with
other certificates never hands its agents a stale CA). An agent is restarted with
backoff when it crashes, is stopped on TERMINATE and at shutdown, and dies with
orchgpt: agentd sets PR_SET_PDEATHSIG itself when ORCHGPT_PARENT_PID is set (no
preexec_fn here: it would force a plain fork(), and gRPC's fork handlers can abort
the child), so that a killed daemon leaves no orphan behind.

Supervision tells the user what goes wrong:

* an agent that has not registered within ``spawn_deadline`` seconds is killed and
  counted as a failed start; its last log line is the reason, and its type's queued
  tasks fail with it (``on_give_up``), as after repeated crashes;
* at most ``max_local`` agent processes live at once. A start beyond that waits for
  a slot, and an idle agent of another type is stopped to make room for it; an agent
  idle for ``idle_timeout`` seconds is stopped too, so slots are always given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import logs
from .agent_types import AGENT_COMMAND
from .certs import CA
from .datadir import make_private_dir, open_private
from .mesh import LOCAL_PREFIX
from .spawner_files import (  # noqa: F401  (read_journals, remove_journals: re-exported)
    JOURNAL_SUFFIX,
    _is_fingerprint_dir,
    _remove_tree,
    _summarize,
    _write_private,
    ca_fingerprint,
    read_journals,
    remove_journals,
)
from .spawner_slots import SpawnSlots

log = logs.get("orchgpt.spawner")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
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
    has_slot: bool = False  # counts against max_local from its first start until it is gone
    last_active: float = field(default_factory=time.monotonic)
    stop_reason: str = ""
    stop_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Spawner(SpawnSlots):
    def __init__(
        self,
        ca: CA,
        state_dir: Path,
        orchestrator: Callable[[], str],
        max_local: int = 10,
        known_types: frozenset[str] = frozenset(),
        env: dict[str, str] | None = None,
        on_give_up: Callable[[str, str], None] | None = None,
        log_dir: Path | None = None,
        spawn_deadline: float = 30.0,
        idle_timeout: float = 300.0,
    ) -> None:
        self.ca = ca
        self.state_dir = state_dir  # DATA_DIR/agents: result journals; certificates below, per CA
        self.cert_dir = state_dir / ca_fingerprint(ca)[:16]
        self.orchestrator = orchestrator
        self.max_local = max_local
        self.known_types = known_types
        self.env = env or {}
        self.on_give_up = on_give_up
        self.log_dir = log_dir
        self.spawn_deadline = spawn_deadline
        self.idle_timeout = idle_timeout
        self.agents: dict[str, LocalAgent] = {}
        self.counts: dict[tuple[str, str], int] = {}  # (agent type, start|crash|give_up): metrics
        self.enabled = True
        # set by the daemon once the mesh exists (see attach)
        self.is_idle: Callable[[str], bool] = lambda agent_id: False
        self.withdraw: Callable[[str], bool] = lambda agent_id: False
        self.waited_on_by: Callable[[str], str] = lambda agent_type: ""
        self.on_change: Callable[[str], None] = lambda agent_type: None
        self._slot_freed = asyncio.Condition()
        self._housekeeper: asyncio.Task[None] | None = None
        self._prepare_cert_dir()

    def attach(
        self,
        is_idle: Callable[[str], bool],
        withdraw: Callable[[str], bool],
        waited_on_by: Callable[[str], str] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """``is_idle(agent_id)``: connected with no task; ``withdraw(agent_id)``: take an idle
        agent out of routing before it is stopped (False when it got work meanwhile);
        ``waited_on_by(agent_type)``: a busy local agent waiting on that type's queued work;
        ``on_change(agent_type)``: a start of that type got its slot (what its tasks wait for)."""
        self.is_idle = is_idle
        self.withdraw = withdraw
        if waited_on_by is not None:
            self.waited_on_by = waited_on_by
        if on_change is not None:
            self.on_change = on_change

    def _prepare_cert_dir(self) -> None:
        make_private_dir(self.state_dir)
        make_private_dir(self.cert_dir)
        _write_private(self.cert_dir / "ca.pem", self.ca.cert_pem)  # every time: this CA's
        # Certificates of other CAs (an earlier `orchgpt certs init`), and the old flat layout,
        # can only fail a TLS handshake: remove them.
        for p in self.state_dir.iterdir():
            if p.is_dir() and p != self.cert_dir and _is_fingerprint_dir(p.name):
                _remove_tree(p)
            elif p.is_file() and (p.name == "ca.pem" or (p.name.startswith(LOCAL_PREFIX) and p.suffix == ".pem")):
                p.unlink(missing_ok=True)

    # ---- SpawnerPort
    def can_spawn(self, agent_type: str) -> bool:
        """True when spawn() may be called for this type now: a slot is free, or none of this
        type lives or waits (its start then waits for a slot, and makes room)."""
        if not (self.enabled and agent_type in self.known_types and self.max_local > 0):
            return False
        if len(self.agents) < self.max_local:
            return True
        return not any(a.agent_type == agent_type and not a.stopping for a in self.agents.values())

    def starting(self, agent_type: str) -> int:
        return sum(
            1 for a in self.agents.values() if a.agent_type == agent_type and not a.registered and not a.stopping
        )

    def waiting_for_slot(self, agent_type: str) -> int:
        """Starts of this type (counted in starting()) that wait for a free local slot."""
        return sum(1 for a in self.agents.values() if a.agent_type == agent_type and not a.has_slot and not a.stopping)

    def is_local(self, agent_id: str) -> bool:
        return agent_id in self.agents

    def spawn(self, agent_type: str) -> None:
        name = f"{LOCAL_PREFIX}{agent_type}-{secrets.token_hex(3)}"
        agent = LocalAgent(name, agent_type)
        agent.has_slot = self._slots_held() < self.max_local  # a free slot is taken at once
        self.agents[name] = agent
        loop = asyncio.get_running_loop()
        agent.supervisor = loop.create_task(self._supervise(agent), name=f"supervise:{name}")
        if self._housekeeper is None or self._housekeeper.done():
            self._housekeeper = loop.create_task(self._housekeeping(), name="spawner-housekeeping")
        log.info("agent_spawning", agent_id=name, agent_type=agent_type, waits_for_slot=not agent.has_slot or None)
        self._make_room()

    def terminate(self, agent_id: str) -> bool:
        a = self.agents.get(agent_id)
        if a is None:
            return False
        a.stopping = True
        a.stop_reason = a.stop_reason or "terminated"
        return True

    # ---- events from the mesh
    def registered(self, agent_id: str) -> None:
        a = self.agents.get(agent_id)
        if a is not None:
            a.registered = True
            a.fails = 0
            a.last_active = time.monotonic()
            a.ready.set()
            log.info("agent_ready", agent_id=agent_id, seconds=round(time.monotonic() - a.started_at, 3))

    def assigned(self, agent_id: str) -> None:
        a = self.agents.get(agent_id)
        if a is not None:
            a.last_active = time.monotonic()

    # ---- supervision
    async def _start(self, a: LocalAgent) -> None:
        make_private_dir(self.cert_dir)
        _write_private(self.cert_dir / "ca.pem", self.ca.cert_pem)  # at every start: never a stale CA
        paths = self.ca.issue_to(self.cert_dir, a.name, "agent", [])
        for p in (paths.cert, paths.key):
            with contextlib.suppress(OSError):
                os.chmod(p, 0o600)
        cmd = [
            *AGENT_COMMAND,
            "--type",
            a.agent_type,
            "--name",
            a.name,
            "--orchestrator",
            self.orchestrator(),
            "--ca",
            str(self.cert_dir / "ca.pem"),
            "--cert",
            str(paths.cert),
            "--key",
            str(paths.key),
        ]
        env = {
            **os.environ,
            **self.env,
            "ORCHGPT_SPAWNED": "1",
            "ORCHGPT_PARENT_PID": str(os.getpid()),
            "ORCHGPT_RESULTS_JOURNAL": str(self.journal_path(a.name)),
        }
        out = None
        if self.log_dir is not None:
            make_private_dir(self.log_dir)
            out = open_private(self.log_dir / f"{a.name}.log")
        try:
            a.proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out if out is not None else asyncio.subprocess.DEVNULL,
                stderr=out if out is not None else asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if out is not None:
                os.close(out)
        a.started_at = time.monotonic()
        self._count(a.agent_type, "start")
        a.registered = False
        a.ready.clear()

    def _count(self, agent_type: str, what: str) -> None:
        self.counts[(agent_type, what)] = self.counts.get((agent_type, what), 0) + 1

    async def _registered_in_time(self, a: LocalAgent) -> bool:
        """Wait until the agent registers or exits; False when the deadline passes first."""
        assert a.proc is not None
        exited = asyncio.ensure_future(a.proc.wait())
        ready = asyncio.ensure_future(a.ready.wait())
        try:
            await asyncio.wait({exited, ready}, timeout=self.spawn_deadline, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        return a.registered or a.proc.returncode is not None or a.stopping

    async def _supervise(self, a: LocalAgent) -> None:
        try:
            await self._take_slot(a)
            while not a.stopping:
                await self._start(a)
                assert a.proc is not None
                if not await self._registered_in_time(a):
                    last = self._last_error(a)
                    reason = f"local {a.agent_type} agent did not register within {self.spawn_deadline:g}s" + (
                        f": {last}" if last else " (no output)"
                    )
                    log.error("agent_start_timeout", agent_id=a.name, reason=reason)
                    self._count(a.agent_type, "give_up")
                    a.stopping = True  # no longer counts as starting
                    await self._kill(a, grace=2.0)
                    if self.on_give_up is not None:
                        self.on_give_up(a.agent_type, reason)
                    break
                code = await a.proc.wait()
                if a.stopping:
                    log.info("agent_stopped", agent_id=a.name, exit_code=code, reason=a.stop_reason or None)
                    break
                if a.registered or time.monotonic() - a.started_at > 30:
                    a.fails = 0
                a.fails += 1
                a.restarts += 1
                self._count(a.agent_type, "crash")
                if a.fails >= FAILS_BEFORE_GIVING_UP:
                    reason = f"local {a.agent_type} agent failed to start {a.fails} times (exit code {code})"
                    last = self._last_error(a)
                    if last:
                        reason += f": {last}"
                    log.error("agent_gave_up", agent_id=a.name, exit_code=code, reason=reason)
                    self._count(a.agent_type, "give_up")
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
            for suffix in (".pem", "-key.pem"):
                with contextlib.suppress(FileNotFoundError):
                    (self.cert_dir / f"{a.name}{suffix}").unlink()
            with contextlib.suppress(FileNotFoundError):
                self.journal_path(a.name).unlink()
            await self._give_slot(a)

    def _last_error(self, a: LocalAgent) -> str:
        """The agent's own last words (its last error line, else its last log line), for the user."""
        if self.log_dir is None:
            return ""
        try:
            with open(self.log_dir / f"{a.name}.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        for line in reversed(lines):
            if line.startswith("agentd:"):
                return line.removeprefix("agentd:").strip()[:300]
        return _summarize(lines[-1])[:300] if lines else ""

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
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        agents = list(self.agents.values())
        for a in agents:
            a.stopping = True
            a.stop_reason = a.stop_reason or "orchgpt is stopping"
        await asyncio.gather(*(self._kill(a, grace) for a in agents), return_exceptions=True)
        for a in agents:
            if a.supervisor is not None:
                a.supervisor.cancel()
        await asyncio.gather(*(a.supervisor for a in agents if a.supervisor), return_exceptions=True)

    def journal_path(self, name: str) -> Path:
        return self.state_dir / f"{name}{JOURNAL_SUFFIX}"

    def pids(self) -> list[int]:
        return [a.proc.pid for a in self.agents.values() if a.proc is not None and a.proc.returncode is None]
