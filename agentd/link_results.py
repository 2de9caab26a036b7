"""The link's results not yet confirmed by orchgpt (PendingResults, mixed into link.Link): the
results journal on disk, the results a REGISTER reports, their confirmation (by the PONG after a
REPLY, or by REGISTERED), and the artifacts of a result uploaded again after a reconnect.

The journal stays open (orchgpt.wire.journal_writer): a result's line is written when it
finishes and its REPLY waits until an fsync has covered it (one fsync for all the results that
finish meanwhile); a confirmation strikes results out with tombstone lines. One PING follows
the REPLYs put in one turn of the event loop (its PONG confirms them all: orchgpt handles a
stream in order and stores a result before it reads on), not one PING per REPLY.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import TaskResult
from orchgpt.wire import codec
from orchgpt.wire import journal as results_journal
from orchgpt.wire.batching import Outbox
from orchgpt.wire.journal_writer import JournalWriter

from . import uploads


class PendingResults:
    """Results kept until orchgpt confirms them (part of link.Link)."""

    journal_writer: JournalWriter | None = None  # the open journal (link.Link makes it)

    if TYPE_CHECKING:  # set by link.Link
        outbox: Outbox | None
        journal: Path | None
        pending_results: list[TaskResult]
        unconfirmed: dict[str, TaskResult]
        _reported: set[str]
        _confirm_on: dict[str, list[str]]
        _replied: list[tuple[Outbox, str]]  # REPLYs put in this turn of the loop (outbox, task id)
        resumes: uploads.Resumes

        def _env(self, type_: pb.MessageType.ValueType, **fields: Any) -> pb.Envelope: ...

    def _journal(self, result: TaskResult, data: bytes | None = None) -> None:
        """Write the result to the journal (``data``: its protobuf bytes, when already made);
        on disk for sure once ``_journal_synced`` returns."""
        jw = self.journal_writer
        if jw is None and self.journal is not None:  # a journal set after the link was made
            kept = [(r.task_id, codec.result_to_bytes(r)) for r in results_journal.read(self.journal)]
            jw = self.journal_writer = JournalWriter(self.journal, kept)
        if jw is not None:
            jw.append(result.task_id, data if data is not None else codec.result_to_bytes(result))

    async def _journal_synced(self) -> None:
        """Every result written to the journal so far is fsynced."""
        jw = self.journal_writer
        if jw is not None:
            await jw.synced()

    def _confirmed(self, task_ids: list[str] | set[str]) -> None:
        """orchgpt has stored these results: out of the journal."""
        jw = self.journal_writer
        if jw is not None and task_ids:
            jw.strike(task_ids)

    def _replied_to(self, outbox: Outbox, task_id: str) -> None:
        """A REPLY of ``task_id`` was put in ``outbox``: a PING follows it, and the REPLYs put in
        the same turn of the loop, once they all are in (its PONG confirms them)."""
        self._replied.append((outbox, task_id))
        if len(self._replied) == 1:
            asyncio.get_running_loop().call_soon(self._ping_after_replies)

    def _ping_after_replies(self) -> None:
        replied, self._replied = self._replied, []
        ob = self.outbox
        # REPLYs put in an earlier stream's outbox may be lost: the next REGISTER reports them
        ids = [task_id for o, task_id in replied if o is ob]
        if ob is None or not ids:
            return
        ping = self._env(pb.PING, ping=pb.Ping())
        if ob.put(ping):
            self._confirm_on[ping.id] = ids

    def _to_report(self) -> list[TaskResult]:
        """Results for the REGISTER: kept while disconnected, and sent but unconfirmed."""
        seen = {r.task_id for r in self.pending_results}
        return [*self.pending_results, *(r for t, r in self.unconfirmed.items() if t not in seen)]

    def _confirmed_by_pong(self, ping_id: str) -> None:
        task_ids = self._confirm_on.pop(ping_id, None)
        if task_ids:
            self._confirmed([t for t in task_ids if self.unconfirmed.pop(t, None) is not None])

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
        if later:  # one PING after them all
            ping = self._env(pb.PING, ping=pb.Ping())
            if outbox.put(ping):
                self._confirm_on[ping.id] = [r.task_id for r in later]
        if done:
            keep = {r.task_id for r in self._to_report()}
            self._confirmed([t for t in done if t not in keep])
