"""The link's results not yet confirmed by orchgpt (PendingResults, mixed into link.Link): the
results journal on disk, the results a REGISTER reports, their confirmation (by the PONG after a
REPLY, or by REGISTERED), and the artifacts of a result uploaded again after a reconnect."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import TaskResult
from orchgpt.wire import codec
from orchgpt.wire import journal as results_journal
from orchgpt.wire.batching import Outbox

from . import uploads


class PendingResults:
    """Results kept until orchgpt confirms them (part of link.Link)."""

    if TYPE_CHECKING:  # set by link.Link
        outbox: Outbox | None
        journal: Path | None
        pending_results: list[TaskResult]
        unconfirmed: dict[str, TaskResult]
        _reported: set[str]
        _confirm_on: dict[str, str]
        resumes: uploads.Resumes

        def _env(self, type_: pb.MessageType.ValueType, **fields: Any) -> pb.Envelope: ...

    def _journal(self, result: TaskResult) -> None:
        if self.journal is not None:
            results_journal.append(self.journal, result)

    def _truncate_journal(self) -> None:
        """Keep in the journal only what orchgpt has not confirmed."""
        if self.journal is not None:
            results_journal.rewrite(self.journal, self._to_report())

    def _to_report(self) -> list[TaskResult]:
        """Results for the REGISTER: kept while disconnected, and sent but unconfirmed."""
        seen = {r.task_id for r in self.pending_results}
        return [*self.pending_results, *(r for t, r in self.unconfirmed.items() if t not in seen)]

    def _confirmed_by_pong(self, ping_id: str) -> None:
        task_id = self._confirm_on.pop(ping_id, None)
        if task_id is not None and self.unconfirmed.pop(task_id, None) is not None:
            self._truncate_journal()

    def _report(self) -> list[TaskResult]:
        results = self._to_report()
        self._reported = {r.task_id for r in results}
        return results

    def _confirmed_at_register(self, outbox: Outbox) -> None:
        """REGISTERED: orchgpt settled the results of the REGISTER before answering. Results
        that finished after the REGISTER left go now, as REPLYs."""
        done, self._reported = self._reported, set()
        later = [r for r in self.pending_results if r.task_id not in done]
        again = {
            r.task_id: r for r in [*self.resumes.unsent.values(), *self.unconfirmed.values(), *self.pending_results]
        }  # unsent: a re-upload cut again
        for r in again.values():
            if r.artifacts and r.workspace:  # their upload may have been cut: sent again
                uploads.reupload(self, r)
        self.pending_results.clear()
        self.unconfirmed = {t: r for t, r in self.unconfirmed.items() if t not in done}
        for r in later:
            reply = pb.Reply(result=codec.result_to_pb(r))
            outbox.put(self._env(pb.REPLY, task_id=r.task_id, reply=reply))
            self.unconfirmed[r.task_id] = r
            ping = self._env(pb.PING, ping=pb.Ping())
            if outbox.put(ping):
                self._confirm_on[ping.id] = r.task_id
        if done:
            self._truncate_journal()
