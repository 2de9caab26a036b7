"""Events crossing daemons (issue 19, docs/scaling.md): the watchers of a task that another
daemon of the cluster runs follow it through the store, by the per-task sequence number.

The daemon running the task sends each event live as it happens (cluster_live.py): ``live``
delivers it at once. It also writes them in batches, each committed batch followed by
``NOTIFY orchgpt_events`` ``TASK_ID SEQ``; orchgpt/cluster.py calls ``stored`` on that
notification (a poll when a watcher lacks SEQ) (and every tick as a fallback), reading through the cluster's async pool
(cluster_db.py): the stored rows fill any gap. Each watcher gets
every event after its last one, once and in order (seq ``last + 1`` only; a live event ahead
of a missing one waits in ``pending``); the stored RESULT event ends the follow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .models import EventKind, TaskEvent, first_seq

if TYPE_CHECKING:
    from .mesh import Mesh
    from .mesh_fanout import Subscriber
    from .store import Store


@dataclass
class _Follow:
    """The watchers of one task and the sequence number of the last event each got."""

    agent_type: str
    subs: dict[Any, int] = field(default_factory=dict)
    pending: dict[int, TaskEvent] = field(default_factory=dict)  # live events ahead of a gap
    result_seq: int = 0  # the stored RESULT's seq, once read
    unstored: dict[int, TaskEvent] = field(default_factory=dict)  # live ones not known stored yet


MAX_PENDING = 1000  # live events held per task while one before them is missing


class _SeqGuard:
    """A watcher handed over to the daemon's own fan-out after it saw live events beyond the
    stored ones (their daemon died before storing them): the numbers it has had are not
    given to it twice. Equal to the watcher it wraps (unsubscribe finds it)."""

    def __init__(self, sub: Subscriber, last: int) -> None:
        self.sub = sub
        self.last = last

    def deliver(self, event: TaskEvent) -> bool:
        return event.seq <= self.last or self.sub.deliver(event)

    def close(self, reason: str) -> None:
        self.sub.close(reason)

    def __eq__(self, other: object) -> bool:
        return other is self or other is self.sub or (isinstance(other, _SeqGuard) and other.sub is self.sub)

    def __hash__(self) -> int:
        return hash(self.sub)


class StoreFollowers:
    def __init__(
        self,
        store: Store,
        read: Callable[[str, int], Awaitable[list[TaskEvent]]],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.store = store  # synchronous: follow and hand_over run inside a request, no await
        self.read = read  # the stored events after a seq, through the cluster's async pool
        self.spawn = spawn
        self.tasks: dict[str, _Follow] = {}
        self._polling: set[str] = set()  # tasks with a poll under way ...
        self._again: set[str] = set()  # ... and another asked for meanwhile

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
            self.request(task_id)
        except RuntimeError:  # no loop: the next poll delivers
            pass
        return True

    def stored(self, payload: str) -> None:
        """A batch notification, ``TASK_ID SEQ``: a poll unless every watcher has SEQ."""
        task_id, _, seq = payload.rpartition(" ")
        if not seq.isdigit():
            task_id, seq = payload, "0"
        f = self.tasks.get(task_id)
        if f is not None:
            for q in [q for q in f.unstored if q <= int(seq)]:
                del f.unstored[q]
        if f is not None and f.subs and (seq == "0" or min(f.subs.values()) < int(seq)):
            self.request(task_id)

    def request(self, task_id: str) -> None:
        """A poll of the task, one at a time (one asked for during a poll runs after it)."""
        if task_id in self._polling:
            self._again.add(task_id)
            return
        self._polling.add(task_id)
        self.spawn(self._polls(task_id))

    async def _polls(self, task_id: str) -> None:
        try:
            while True:
                await self.poll(task_id)
                if task_id not in self._again:
                    return
                self._again.discard(task_id)
        finally:
            self._polling.discard(task_id)
            self._again.discard(task_id)

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
        f.pending.clear()
        stored = self.store.last_seq(task_id)
        lost: list[TaskEvent] = []  # live events the watchers had and their daemon died before storing: stored here
        for q in sorted(f.unstored):
            if q == stored + len(lost) + 1:
                lost.append(f.unstored[q])
        if lost:
            try:
                self.store.append_events(lost)
                stored = lost[-1].seq
            except StoreError:  # the guard below keeps each watcher's numbers once
                pass
        if f.subs:
            self._stored(f, self.store.events(task_id, min(f.subs.values())))
        return [s if last <= stored else _SeqGuard(s, last) for s, last in f.subs.items()]

    def live(self, ev: TaskEvent) -> None:
        """An event sent live by the daemon running the task: delivered now to each watcher
        whose last event is the one before; held while one before it is missing."""
        f = self.tasks.get(ev.task_id)
        if f is None or not f.subs or ev.kind == EventKind.RESULT or ev.seq <= min(f.subs.values()):
            return
        if len(f.pending) >= MAX_PENDING:
            return  # the store has it (or will)
        ev.agent_type = ev.agent_type or f.agent_type
        f.pending[first_seq(ev)] = ev  # by its first seq: a folded token event holds a range
        if len(f.unstored) < MAX_PENDING:
            f.unstored[first_seq(ev)] = ev
        self._drain(f)
        self._end(ev.task_id, f)

    def catch_up(self, task_id: str) -> None:
        """Deliver at once (synchronously) what is stored of a followed task: before something
        that must come after its events, such as its delegation reply (cluster_messages.py);
        live events and async polls may still be on their way."""
        f = self.tasks.get(task_id)
        if f is not None and f.subs:
            self._stored(f, self.store.events(task_id, min(f.subs.values())))
            self._end(task_id, f)

    async def poll_all(self) -> None:
        for task_id in list(self.tasks):
            await self.poll(task_id)

    async def poll(self, task_id: str) -> None:
        """The stored events each watcher lacks (read without holding the loop)."""
        f = self.tasks.get(task_id)
        if f is None or not f.subs:
            return
        events = await self.read(task_id, min(f.subs.values()))
        if self.tasks.get(task_id) is f:  # (not handed over or ended meanwhile)
            self._stored(f, events)
            self._end(task_id, f)

    def _stored(self, f: _Follow, events: list[TaskEvent]) -> None:
        for ev in events:
            ev.agent_type = ev.agent_type or f.agent_type
            f.pending[first_seq(ev)] = ev  # by its first seq: a folded token event holds a range
            f.unstored.pop(first_seq(ev), None)
            if ev.kind == EventKind.RESULT:
                f.result_seq = ev.seq
        self._drain(f)

    def _end(self, task_id: str, f: _Follow) -> None:
        """The watchers that have had the stored RESULT are done; the follow with them."""
        if f.result_seq:
            for s, last in list(f.subs.items()):
                if last >= f.result_seq:
                    del f.subs[s]
                    s.close("task finished")
        if not f.subs and self.tasks.get(task_id) is f:
            del self.tasks[task_id]

    def _drain(self, f: _Follow) -> None:
        """Each watcher gets the held events that follow its last one, in order; those every
        watcher has had are forgotten."""
        for s, last in list(f.subs.items()):
            while (ev := f.pending.get(last + 1)) is not None:
                last = ev.seq
                if not s.deliver(ev):
                    f.subs.pop(s, None)
                    s.close("client too slow: event buffer full; watch again with after_seq")
                    break
            else:
                f.subs[s] = last
        low = min(f.subs.values(), default=None)
        for seq in [q for q in f.pending if low is None or q <= low]:
            del f.pending[seq]


class ParentRelay:
    """A watcher of a sub-task that another daemon runs, on behalf of the watchers of its
    parent here: they get the sub-task's events as they would on one daemon (in order,
    once). Once the sub-task is run here (taken over), the mesh's own fan-out carries them."""

    def __init__(self, mesh: Mesh, parent_task_id: str) -> None:
        self.mesh = mesh
        self.parent = parent_task_id

    def deliver(self, event: TaskEvent) -> bool:
        if event.task_id not in self.mesh.queues.active:
            self.mesh.fanout.deliver(event, start=self.parent, every=False)  # (those: cluster_all.py)
        return True

    def close(self, reason: str) -> None:
        pass
