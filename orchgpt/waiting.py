"""What a queued task waits for, told to its watchers.

A task that cannot be assigned at once gets a STATUS event (state QUEUED) such as
"waiting for a backend agent: 0 connected, 1 starting". It is told when it starts to
wait and again only when that changes (an agent connects or is lost, a start begins
or gives up), never on every dispatch. Cost per dispatch: O(1) amortized, plus one
pass over the queue when the text changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .models import EventKind, TaskEvent, TaskState

if TYPE_CHECKING:
    from .mesh import Mesh


def describe(
    mesh: Mesh, agent_type: str, connected: int, starting: int, for_slot: int = 0
) -> tuple[str, dict[str, str]]:
    article = "an" if agent_type[:1] in ("a", "e", "i", "o", "u") else "a"
    text = (
        f"waiting for {article} {agent_type} agent: {connected} connected"
        f"{' (busy)' if connected else ''}, {starting} starting"
    )
    if not connected and not starting and mesh.spawner is None:
        text += " (orchgpt spawns no agents: start one by hand)"
    if for_slot:
        limit = getattr(mesh.spawner, "max_local", 0)
        text += f" (waiting for a free local agent slot: all {limit} in use)"
    return text, {
        "waiting_for": agent_type,
        "connected": str(connected),
        "starting": str(starting),
        "waiting_for_slot": str(for_slot),
    }


class WaitingNotes:
    def __init__(self) -> None:
        self._said: dict[str, tuple[str, set[str]]] = {}  # agent type -> (text, task ids told it)
        # agent type -> (number of agents connected, starting) when its connected ones were last
        # counted, and that count: every registration and loss changes the first and is followed
        # by a dispatch of its type, so the O(agents) count is redone only after a change.
        self._counted: dict[str, tuple[tuple[int, int, int], int]] = {}

    def note(self, mesh: Mesh, agent_type: str) -> None:
        """Tell the tasks queued for ``agent_type`` what they wait for, if not told already."""
        q = mesh.queues.queues.get(agent_type)
        if not q:
            self._said.pop(agent_type, None)
            self._counted.pop(agent_type, None)
            return
        starting = mesh.spawner.starting(agent_type) if mesh.spawner is not None else 0
        slots = getattr(mesh.spawner, "waiting_for_slot", None)
        for_slot = slots(agent_type) if slots is not None and starting else 0
        basis = (len(mesh.registry.agents), starting, for_slot)
        counted = self._counted.get(agent_type)
        if counted is not None and counted[0] == basis:
            connected = counted[1]
        else:
            connected = mesh.registry.count_type(agent_type)
            self._counted[agent_type] = (basis, connected)
        text, data = describe(mesh, agent_type, connected, starting, for_slot)
        said = self._said.get(agent_type)
        if said is None or said[0] != text:
            told: set[str] = set()
            self._said[agent_type] = (text, told)
            todo = list(q)
        else:
            told = said[1]
            todo = []
            for task_id in reversed(q):  # new tasks are appended...
                if task_id in told:
                    break
                todo.append(task_id)
            for task_id in q:  # ...requeued ones put in front
                if task_id in told or task_id in todo:
                    break
                todo.append(task_id)
            if len(told) > 2 * len(q) + 64:  # forget tasks that left the queue
                told.intersection_update(q)
        for task_id in todo:
            t = mesh.queues.get(task_id)
            if t is None or t.state != TaskState.QUEUED:
                continue
            told.add(task_id)
            mesh.fanout.publish(
                TaskEvent(
                    task_id,
                    EventKind.STATUS,
                    state=TaskState.QUEUED,
                    text=text,
                    parent_task_id=t.parent_task_id,
                    data=dict(data),
                )
            )


def waited_on_by_local(mesh: Mesh, agent_type: str) -> str:
    """A busy local agent whose task waits (through delegation) on a task queued for
    ``agent_type``, or "". With every local slot held by such agents the start must not
    wait for a slot: none would ever be given back (a manager and its sub-tasks)."""
    running = mesh.registry.local_running()
    if not running:
        return ""
    for task_id in mesh.queues.queues.get(agent_type, ()):
        t = mesh.queues.get(task_id)
        hops = 0
        while t is not None and t.parent_task_id and hops < 16:
            if t.parent_task_id in running:
                return running[t.parent_task_id]
            t = mesh.queues.get(t.parent_task_id)
            hops += 1
    return ""
