"""The local agents' slots (SpawnSlots, mixed into spawner.Spawner): at most ``max_local``
agentd processes at once; a start waits for a slot, an idle agent gives its slot up after
``idle_timeout`` or to make room for a start that waits, and an agent a busy one waits on keeps it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import logs

if TYPE_CHECKING:
    from .spawner import LocalAgent

log = logs.get("orchgpt.spawner")

HOUSEKEEPING_S = 0.5  # how often idle agents and waiting starts are looked at
STOP_GRACE_S = 5.0  # an agent asked to stop is killed after this


class SpawnSlots:
    """Who holds a slot and who gets the next one (part of spawner.Spawner)."""

    if TYPE_CHECKING:  # set by spawner.Spawner
        agents: dict[str, LocalAgent]
        max_local: int
        idle_timeout: float
        enabled: bool
        is_idle: Callable[[str], bool]
        withdraw: Callable[[str], bool]
        waited_on_by: Callable[[str], str]
        on_change: Callable[[str], None]
        _slot_freed: asyncio.Condition

    def _slots_held(self) -> int:
        return sum(1 for a in self.agents.values() if a.has_slot)

    async def _take_slot(self, a: LocalAgent) -> None:
        if a.has_slot:
            return
        async with self._slot_freed:
            while self._slots_held() >= self.max_local and not a.stopping:
                self._make_room()
                if self._slots_held() >= self.max_local and self._all_wait_on(a.agent_type):
                    log.warning(
                        "local_agent_limit_exceeded",
                        agent_id=a.name,
                        limit=self.max_local,
                        reason=f"every local agent is busy and waits on {a.agent_type} work it delegated",
                    )
                    break
                with contextlib.suppress(TimeoutError):  # woken when a slot is given back
                    await asyncio.wait_for(self._slot_freed.wait(), 1.0)
            a.has_slot = True
        try:  # it waited: what its type's tasks wait for has changed
            self.on_change(a.agent_type)
        except Exception as exc:  # telling must not stop the start
            log.warning("on_change_failed", error=str(exc))

    def _all_wait_on(self, agent_type: str) -> bool:
        """No slot can come back but through this start: every holder is busy (none is
        stopping) and one of them waits for the queued work of ``agent_type``."""
        holders = [h for h in self.agents.values() if h.has_slot]
        if any(h.stopping or not h.registered or self.is_idle(h.name) for h in holders):
            return False
        return bool(self.waited_on_by(agent_type))

    async def _give_slot(self, a: LocalAgent) -> None:
        if a.has_slot:
            a.has_slot = False
            async with self._slot_freed:
                self._slot_freed.notify_all()

    def _make_room(self) -> None:
        """Stop idle agents (longest idle first) for the starts that wait for a slot, and
        to get back under the limit after starts that went past it."""
        waiting = [a for a in self.agents.values() if not a.has_slot and not a.stopping]
        leaving = sum(1 for a in self.agents.values() if a.has_slot and a.stopping)
        free = self.max_local - self._slots_held()
        need = len(waiting) - free - leaving  # (free < 0 after starts that went past the limit)
        if need <= 0:
            return
        wanted = {a.agent_type for a in waiting}
        idle = sorted(
            (
                a
                for a in self.agents.values()
                if a.has_slot and a.registered and not a.stopping and a.agent_type not in wanted
            ),
            key=lambda a: a.last_active,
        )
        why = (
            f"making room for {', '.join(sorted(wanted))} (limit {self.max_local})"
            if wanted
            else f"more than {self.max_local} local agents run (starts that went past the limit)"
        )
        for a in idle:
            if need <= 0:
                break
            if self.is_idle(a.name) and self._stop(a, why):
                need -= 1

    def _stop(self, a: LocalAgent, reason: str) -> bool:
        """Stop an idle agent (its slot comes back when it has exited)."""
        if not self.withdraw(a.name):
            return False
        a.stopping = True
        a.stop_reason = reason
        a.stop_at = time.monotonic()
        log.info("agent_stopping", agent_id=a.name, agent_type=a.agent_type, reason=reason)
        if a.proc is not None and a.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                a.proc.send_signal(signal.SIGTERM)
        return True

    async def _housekeeping(self) -> None:
        """Stop agents idle too long; make room for starts waiting for a slot; kill the stuck."""
        while self.enabled:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                now = time.monotonic()
                for a in list(self.agents.values()):
                    if a.stop_at and now - a.stop_at > STOP_GRACE_S and a.proc and a.proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            a.proc.kill()  # asked to stop, still there
                    if not (a.has_slot and a.registered) or a.stopping:
                        continue
                    if not self.is_idle(a.name):
                        a.last_active = now
                    elif now - a.last_active >= self.idle_timeout:
                        self._stop(a, f"idle for {now - a.last_active:.0f}s")
                self._make_room()
            except Exception as exc:  # keep supervising
                log.exception("housekeeping_error", error=str(exc))
