"""Events crossing daemons (issue 19, docs/scaling.md): the watchers of a task that another
daemon of the cluster runs follow it through the store, by the per-task sequence number.

The daemon running the task writes its events in batches, each batch's transaction ending
with ``NOTIFY orchgpt_events`` (store/postgres.py); orchgpt/cluster.py calls ``poll`` on
that notification (and every tick as a fallback). Each watcher gets every event after its
last one, once and in order; the RESULT event ends the follow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .models import EventKind

if TYPE_CHECKING:
    from .mesh import Mesh
    from .mesh_fanout import Subscriber
    from .models import TaskEvent
    from .store import Store


@dataclass
class _Follow:
    """The watchers of one task and the sequence number of the last event each got."""

    agent_type: str
    subs: dict[Any, int] = field(default_factory=dict)


class StoreFollowers:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.tasks: dict[str, _Follow] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def follow(self, task_id: str, sub: Subscriber, after_seq: int) -> bool:
        """``sub`` gets the events after ``after_seq`` as they are stored, from the next turn
        of the loop on; False (nothing to follow) when the task is finished or unknown."""
        f = self.tasks.get(task_id)
        if f is None:
            t = self.store.get_task(task_id)
            if t is None or t.state.terminal:
                return False
            f = self.tasks[task_id] = _Follow(t.agent_type)
        f.subs[sub] = after_seq
        try:  # after the caller has queued the replay (no await in between): in order
            asyncio.get_running_loop().call_soon(self.poll, task_id)
        except RuntimeError:  # no loop: the next poll delivers
            pass
        return True

    def unfollow(self, sub: Subscriber, task_id: str) -> None:
        f = self.tasks.get(task_id)
        if f is not None:
            f.subs.pop(sub, None)
            if not f.subs:
                del self.tasks[task_id]

    def hand_over(self, task_id: str) -> list[Subscriber]:
        """The task is run here from now on: its watchers get what is stored, and are
        returned for the daemon's own fan-out to carry on (no gap: nothing awaits between)."""
        f = self.tasks.pop(task_id, None)
        if f is None:
            return []
        self._deliver(task_id, f)
        return list(f.subs)

    def poll_all(self) -> None:
        for task_id in list(self.tasks):
            self.poll(task_id)

    def poll(self, task_id: str) -> None:
        f = self.tasks.get(task_id)
        if f is not None and self._deliver(task_id, f):
            del self.tasks[task_id]
            for s in f.subs:
                s.close("task finished")

    def _deliver(self, task_id: str, f: _Follow) -> bool:
        """Each watcher gets the stored events after its last one, in order and once;
        True once the task's RESULT is stored."""
        if not f.subs:
            return False
        done = False
        for ev in self.store.events(task_id, min(f.subs.values())):
            ev.agent_type = ev.agent_type or f.agent_type
            for s, seq in list(f.subs.items()):
                if ev.seq != seq + 1:
                    continue  # it had this one already (or the one before is not stored yet)
                f.subs[s] = ev.seq
                if not s.deliver(ev):
                    f.subs.pop(s, None)
                    s.close("client too slow: event buffer full; watch again with after_seq")
            done = done or ev.kind == EventKind.RESULT
        return done


class ParentRelay:
    """A watcher of a sub-task that another daemon runs, on behalf of the watchers of its
    parent here: they get the sub-task's events as they would on one daemon (in order,
    once). Once the sub-task is run here (taken over), the mesh's own fan-out carries them."""

    def __init__(self, mesh: Mesh, parent_task_id: str) -> None:
        self.mesh = mesh
        self.parent = parent_task_id

    def deliver(self, event: TaskEvent) -> bool:
        if event.task_id not in self.mesh.queues.active:
            self.mesh.fanout.deliver(event, start=self.parent)
        return True

    def close(self, reason: str) -> None:
        pass
