"""Rules of an agent's Connect stream that the transport applies (docs/protocol.md).

Which task a REPLY or a TASK_EVENT is about, and how the daemon ends a stream it
closes (always an ERROR envelope with a code, then that status). Protobuf in,
plain values out: the servicer calls these from a line or two.
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import ErrorCode, OrchgptError
from .iac.v1 import iac_pb2 as pb

# How many RUN envelope ids the daemon remembers per agent (an agent runs one task at a
# time; a few more cover a refused or a stale RUN).
RUNS_PER_AGENT = 16

# Codes of the streams the daemon closes (the ERROR envelope's code and the RPC status).
SILENT = "DEADLINE_EXCEEDED"  # no traffic for heartbeat_interval x misses
REPLACED = "ABORTED"  # a newer connection with the same certificate took over
SHUTTING_DOWN = "UNAVAILABLE"  # the daemon is stopping
STREAM_ERROR = "INTERNAL"  # a bug while handling the stream


class ProtocolError(OrchgptError, ValueError):
    """An envelope breaks a rule of docs/protocol.md; answered with an ERROR envelope."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message, code)


class RunIds:
    """RUN envelope id -> task id, per agent: a REPLY may name its task by correlation_id alone.

    Bounded: at most RUNS_PER_AGENT ids per agent, and an agent's ids go once it has no
    task left (``prune``)."""

    def __init__(self) -> None:
        self._by_agent: dict[str, OrderedDict[str, str]] = {}

    def remember(self, agent_id: str, run_id: str, task_id: str) -> None:
        runs = self._by_agent.setdefault(agent_id, OrderedDict())
        runs[run_id] = task_id
        while len(runs) > RUNS_PER_AGENT:
            runs.popitem(last=False)

    def task_of(self, agent_id: str, run_id: str) -> str:
        runs = self._by_agent.get(agent_id)
        return runs.get(run_id, "") if runs and run_id else ""

    def forget_task(self, agent_id: str, task_id: str) -> None:
        runs = self._by_agent.get(agent_id)
        if not runs:
            return
        for run_id in [r for r, t in runs.items() if t == task_id]:
            del runs[run_id]
        if not runs:
            del self._by_agent[agent_id]

    def prune(self, agent_id: str, keep: set[str]) -> None:
        """Forget the agent's RUN ids of tasks not in ``keep`` (tasks still assigned to it)."""
        runs = self._by_agent.get(agent_id)
        if not runs:
            return
        for run_id in [r for r, t in runs.items() if t not in keep]:
            del runs[run_id]
        if not runs:
            del self._by_agent[agent_id]


def reply_task_id(agent_id: str, env: pb.Envelope, runs: RunIds) -> str:
    """The task a task-result REPLY is about: ``reply.result.task_id``, else the envelope's
    ``task_id``, else the task of the RUN envelope named by ``correlation_id``."""
    if not env.HasField("reply") or not env.reply.HasField("result"):
        raise ProtocolError(
            "INVALID_ARGUMENT", "a REPLY to orchgpt needs the body `reply` with `reply.result` (the task's result)"
        )
    named = [
        (what, v)
        for what, v in (
            ("reply.result.task_id", env.reply.result.task_id),
            ("task_id", env.task_id),
            ("correlation_id", runs.task_of(agent_id, env.correlation_id)),
        )
        if v
    ]
    if not named:
        why = (
            f"correlation_id {env.correlation_id!r} is not the id of a RUN sent to {agent_id}"
            if env.correlation_id
            else "correlation_id is empty"
        )
        raise ProtocolError(
            "INVALID_ARGUMENT",
            "REPLY names no task: set reply.result.task_id, the envelope's task_id, or "
            f"correlation_id to the RUN envelope's id ({why})",
        )
    task_id = named[0][1]
    for what, v in named[1:]:
        if v != task_id:
            raise ProtocolError(
                "INVALID_ARGUMENT", f"REPLY names two tasks: {named[0][0]} is {task_id!r} but {what} is {v!r}"
            )
    return task_id


def event_task_id(env: pb.Envelope) -> str:
    """The task a TASK_EVENT is about: ``event.task_id``, else the envelope's ``task_id``."""
    if not env.HasField("event"):
        raise ProtocolError("INVALID_ARGUMENT", "a TASK_EVENT needs the body `event`")
    ev = env.event
    if ev.task_id and env.task_id and ev.task_id != env.task_id:
        raise ProtocolError(
            "INVALID_ARGUMENT",
            f"TASK_EVENT names two tasks: event.task_id is {ev.task_id!r} but task_id is {env.task_id!r}",
        )
    task_id = ev.task_id or env.task_id
    if not task_id:
        raise ProtocolError("INVALID_ARGUMENT", "TASK_EVENT names no task: set event.task_id or the envelope's task_id")
    return task_id
