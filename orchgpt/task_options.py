"""The options a command's task is stored with, whichever way it arrives (the Submit RPC, an
agent's delegation, a schedule's run, A2A): a workflow run gets its definition from the daemon's
workflows (orchgpt/workflow_runs.py), a graph run the stored graph it names
(orchgpt/graphs/submit.py). RoutingError names a problem (an unknown workflow or graph)."""

from __future__ import annotations

from collections.abc import Iterable

from . import workflow_runs
from .graphs.submit import graph_options
from .models import Command
from .store import Store
from .workflows import WorkflowBook


def task_options(
    store: Store,
    workflows: WorkflowBook | None,
    known_types: Iterable[str],
    cmd: Command,
    submitted_by: str,
) -> dict[str, str]:
    """The task's options for ``cmd`` (which gets a workflow's definition in its options)."""
    workflow_runs.resolve(cmd, workflows, known_types)
    return graph_options(store, cmd, submitted_by)
