"""GrpcAgentLink: the mesh's AgentLink to one agent's Connect stream; what the mesh sends an agent
becomes an envelope in the stream's Outbox."""

from __future__ import annotations

from typing import cast

from . import codec, stream_rules, tracing, tracing_mesh
from .batching import Outbox
from .iac.v1 import iac_pb2 as pb
from .models import ApprovalResponse, Task, TaskResult
from .servicer_base import ORCH
from .wire import pings


class GrpcAgentLink:
    """AgentLink over one Connect stream."""

    __slots__ = ("_pinged_mark", "agent_id", "close_code", "outbox", "runs")  # one per connected agent

    def __init__(self, agent_id: str, outbox: Outbox, runs: stream_rules.RunIds | None = None) -> None:
        self.agent_id = agent_id
        self.outbox = outbox
        self.runs = runs
        self.close_code = ""  # set when the daemon closes the stream: its ERROR code and status
        self._pinged_mark = outbox.added  # outbox.added at the last send_ping

    def _send(self, env: pb.Envelope) -> None:
        env.recipient.agent_id = self.agent_id
        self.outbox.put(env)

    def send_task(self, task: Task) -> None:
        env = codec.new_envelope(
            pb.RUN, ORCH, task_id=task.task_id, session_id=task.session_id, task=codec.task_to_spec(task)
        )
        if tracing.ENABLED:  # the agent's spans go under this run's span
            env.traceparent, env.tracestate = tracing_mesh.run_carrier(task.task_id)
        if self.runs is not None:  # a REPLY may name its task by correlation_id = this id
            self.runs.remember(self.agent_id, env.id, task.task_id)
        self._send(env)

    def send_cancel(self, task_id: str, reason: str) -> None:
        self._send(codec.new_envelope(pb.CANCEL, ORCH, task_id=task_id, cancel=pb.Cancel(reason=reason)))

    def send_terminate(self, reason: str) -> None:
        self._send(codec.new_envelope(pb.TERMINATE, ORCH, terminate=pb.Terminate(reason=reason)))

    def send_approval(self, task_id: str, response: ApprovalResponse) -> None:
        self._send(
            codec.new_envelope(
                pb.APPROVAL_RESPONSE, ORCH, task_id=task_id, approval_response=codec.approval_response_to_pb(response)
            )
        )

    def send_reply(self, correlation_id: str, result: TaskResult) -> None:
        self._send(
            codec.new_envelope(
                pb.REPLY,
                ORCH,
                task_id=result.task_id,
                correlation_id=correlation_id,
                reply=pb.Reply(result=codec.result_to_pb(result)),
            )
        )

    def send_ping(self, interval: float = 0.0) -> None:
        """A PING for the agent's watchdog, unless something else was sent to it since the last
        call (any traffic counts as life: the agent resets its watchdog on every frame). With
        ``interval``: always, announcing the agent's new heartbeat interval (orchgpt.heartbeats).
        The envelope is shared by the agents pinged in the same second (wire.pings)."""
        if not interval and self.outbox.added != self._pinged_mark:
            self._pinged_mark = self.outbox.added
            return
        self.outbox.put(pings.shared(int(interval * 1000), ORCH))  # its stream names the recipient
        self._pinged_mark = self.outbox.added

    def forward(self, message: object) -> None:
        """Another agent's envelope, unchanged (its recipient is already this agent or all)."""
        self.outbox.put(cast(pb.Envelope, message))  # only the transport hands it envelopes

    def close(self, reason: str, code: str = stream_rules.SHUTTING_DOWN) -> None:
        """End the stream: an ERROR envelope (code, reason) goes last, then the RPC ends with
        that status (Connect)."""
        if not self.outbox.closed:
            self.close_code = code
            self._send(codec.new_envelope(pb.ERROR, ORCH, error=pb.Error(code=code, message=reason)))
        self.outbox.close(reason)
