"""Which other tasks' files an agent may download: the inputs of a task it runs.

A sub-task handed the results of earlier ones (``Task.inputs``, set by the manager's plan or a
workflow) needs their files on its own host: FetchArtifact lets the agent running it read the
files of exactly those tasks, while it runs it (orchgpt.authz's ``assigned`` scope covers only
its own tasks and their sub-tasks). Anything else stays NOT_FOUND, as for a missing task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .certs import Identity
from .models import Task


def input_task(
    ident: Identity,
    task_id: str,
    tasks_on: Callable[[str], Iterable[str]],
    get_task: Callable[[str], Task | None],
) -> Task | None:
    """The task ``task_id`` when ``ident`` is an agent running a task that lists it among its
    inputs; else None (the usual rules apply)."""
    if ident.role != "agent" or not task_id:
        return None
    for running_id in tasks_on(ident.name):
        running = get_task(running_id)
        if running is not None and running.agent_id == ident.name and any(r.task_id == task_id for r in running.inputs):
            return get_task(task_id)
    return None
