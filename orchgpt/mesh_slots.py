"""An agent's slots: how many tasks it runs at once (Register.max_concurrent_tasks, capped by the
daemon's max_agent_concurrency) and which ones it runs (AgentInfo.running_tasks).

An agent with a free slot stays assignable (in AgentRegistry.idle, by type); its state is BUSY
while it runs at least one task. ``current_task`` is the first running task (what clients and
daemons that predate slots show). With one slot (the default) this is exactly the old rule:
one task at a time, assignable when it runs none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .models import AgentState

if TYPE_CHECKING:
    from .mesh_registry import AgentEntry, AgentRegistry

DEFAULT_MAX_AGENT_CONCURRENCY = 64  # the daemon's cap (Settings.max_agent_concurrency)


def granted(asked: int, cap: int) -> int:
    """The slots an agent gets: what it asked for (0 or 1: one), at most ``cap``."""
    return max(1, min(int(asked or 1), max(int(cap), 1)))


def free(entry: AgentEntry) -> int:
    """Slots a new RUN may take (0 after a BUSY refusal, until the agent's next result)."""
    if entry.full:
        return 0
    return entry.info.max_concurrent_tasks - len(entry.info.running_tasks) - len(entry.stale)


def restate(entry: AgentEntry) -> None:
    """``current_task`` and ``state`` from what the agent runs."""
    info = entry.info
    info.current_task = info.running_tasks[0] if info.running_tasks else ""
    info.state = AgentState.BUSY if (info.running_tasks or entry.stale or entry.full) else AgentState.IDLE


def occupy(registry: AgentRegistry, entry: AgentEntry, task_id: str) -> None:
    """The agent runs ``task_id`` now (assigned or resumed); full: it leaves the assignable."""
    if task_id not in entry.info.running_tasks:
        entry.info.running_tasks.append(task_id)
    restate(entry)
    if free(entry) <= 0:
        registry.not_idle(entry)


def release(entry: AgentEntry, task_id: str) -> bool:
    """The agent no longer runs ``task_id`` (its result, a refusal): True when it held a slot."""
    info = entry.info
    held = False
    if task_id in info.running_tasks:
        info.running_tasks.remove(task_id)
        held = True
    if task_id in entry.stale:
        entry.stale.discard(task_id)
        held = True
    return held


def settle_slot(registry: AgentRegistry, entry: AgentEntry, task_id: str) -> None:
    """A result of the agent: its slot is free (and a BUSY refusal forgotten); assignable again
    when connected with a free slot. A result of a task it does not hold (a late result of an
    earlier attempt) changes nothing, unless the agent was only waited for (after a BUSY refusal,
    or cancelling stale tasks): as with one slot, any answer frees it then."""
    if not release(entry, task_id):
        if not (entry.full or (entry.stale and not entry.info.running_tasks)):
            return
        entry.stale.clear()
    entry.full = False
    restate(entry)
    if free(entry) > 0 and registry.get(entry.info.agent_id) is entry:
        registry.mark_idle(entry)


def reconcile(registry: AgentRegistry, entry: AgentEntry, running: list[str]) -> bool:
    """A HEARTBEAT of an agent with slots lists what it runs: a stale task it no longer runs
    (cancelled while it was away) frees its slot. True when a slot came free."""
    gone = entry.stale - set(running)
    if not gone:
        return False
    entry.stale -= gone
    restate(entry)
    if free(entry) > 0 and registry.get(entry.info.agent_id) is entry:
        registry.mark_idle(entry)
    return True
