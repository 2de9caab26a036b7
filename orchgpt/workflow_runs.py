"""Submitting a workflow: the daemon resolves the workflow's name to its definition.

``/workflow run NAME "task"`` submits a task for the ``workflow`` agent type with option
``workflow=NAME``. Before the mesh accepts it, the daemon looks the name up in the workflows it
loaded from its own directory (orchgpt/workflows.py) and puts the validated definition in the
task (option ``workflow_def``, JSON): the ``workflow`` agent that runs it, on this host or another,
reads no file, and no peer names a file the daemon reads. A definition set by the client is
refused. Each turn then runs as a sub-task (agentd/agents/workflow.py).

``Mesh.submit`` does it (``workflow_def``), so that every way in resolves it alike: gRPC Submit,
A2A, the AMQP bridge (a gRPC client), schedules and delegations.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import RoutingError
from .models import Action, Command
from .workflows import DEF_OPTION, NAME_OPTION, USER_PROXY, WorkflowBook

WORKFLOW_TYPE = "workflow"
# agent types the workflow agent itself delegates to besides the participants
HELPER_TYPES = ("assistant",)


def resolve(cmd: Command, book: WorkflowBook | None, known: Iterable[str]) -> None:
    """Put the named workflow's definition into ``cmd`` (RoutingError names the problem)."""
    cmd.options.update(workflow_def(cmd, book, known))


def workflow_def(cmd: Command, book: WorkflowBook | None, known: Iterable[str]) -> dict[str, str]:
    """The options to add to a workflow run's task: ``{workflow_def: JSON}`` (none for other
    tasks); RoutingError names the problem."""
    if cmd.agent_type != WORKFLOW_TYPE or cmd.action not in (Action.CREATE, Action.RUN):
        return {}
    if DEF_OPTION in cmd.options:
        raise RoutingError(
            f"option {DEF_OPTION} is set by the daemon; name the workflow with option {NAME_OPTION}",
            code="INVALID_ARGUMENT",
        )
    name = cmd.options.get(NAME_OPTION, "").strip()
    if book is not None:
        book.refresh()  # files edited since: read again
    names = book.names() if book is not None else []
    if not name:
        raise RoutingError(
            f'option {NAME_OPTION}: name the workflow to run (/workflow run NAME "task"); '
            f"workflows: {', '.join(names) or 'none'}",
            code="INVALID_ARGUMENT",
        )
    wf = book.get(name) if book is not None else None
    if wf is None:
        where = f" in {book.directory}" if book is not None and book.directory else ""
        raise RoutingError(
            f"no workflow {name!r}{where}; workflows: {', '.join(names) or 'none'}",
            code="NOT_FOUND",
        )
    types = set(known)
    missing = [p.type for p in wf.participants if p.type != USER_PROXY and p.type not in types]
    if missing:
        raise RoutingError(
            f"workflow {name!r}: unknown agent type(s) {', '.join(sorted(set(missing)))}; "
            f"known types: {', '.join(sorted(types))}",
            code="FAILED_PRECONDITION",
        )
    return {DEF_OPTION: wf.to_json()}
