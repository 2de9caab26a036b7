"""Token deltas folded together for a watcher that is behind.

A client watching tasks gets each event as a TASK_EVENT envelope queued in its stream's
outbox (batching.Outbox). While the client keeps up, the outbox is empty and every token
delta goes out on its own, at once. When it falls behind, a token delta of a task whose
previous envelope is a token delta still waiting in the outbox is appended to that envelope
instead of queued: the text is concatenated, the envelope's ``seq`` becomes the last delta's,
and ``data["seq_from"]`` keeps the first, so the envelope stands for the range
``seq_from..seq`` and the per-task order and numbering hold (a client resumes with
``Watch(after_seq=seq)``). A slow watcher then gets fewer, larger events instead of being
dropped; only one that stops reading altogether fills the outbox's byte bound and is cut.
"""

from __future__ import annotations

from ..iac.v1 import iac_pb2 as pb
from ..models import SEQ_FROM, TaskEvent
from .batching import Outbox

__all__ = ["MAX_TEXT", "SEQ_FROM", "TokenCoalescer", "deltas"]
MAX_TEXT = 32 * 1024  # characters folded into one envelope before a new one is started
_PRUNE_AT = 4096  # open entries kept before the sent ones are forgotten


def deltas(event: pb.TaskEvent) -> int:
    """How many token deltas a TASK_EVENT stands for (1 unless coalesced)."""
    first = event.data.get(SEQ_FROM)
    return event.seq - int(first) + 1 if first else 1


class TokenCoalescer:
    """Per task: the token envelope of that task still waiting in one outbox (if any)."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, tuple[int, pb.Envelope]] = {}

    def fold(self, outbox: Outbox, event: TaskEvent) -> bool:
        """Append a token delta to its task's waiting token envelope; True when folded (nothing
        more to queue). Every event of a watched task passes here, so that a token delta never
        folds across an event of another kind."""
        if event.kind != "token":
            if self._open:
                self._open.pop(event.task_id, None)
            return False
        entry = self._open.get(event.task_id)
        if entry is None:
            return False
        pos, env = entry
        m = env.event
        if pos <= outbox.taken or len(m.token.text) + len(event.text) > MAX_TEXT:
            del self._open[event.task_id]  # sent already (or full): a new envelope
            return False
        if outbox.closed or not outbox.grow(len(event.text)):
            return True  # the outbox was cut (the watcher stopped reading) or closed
        if SEQ_FROM not in m.data:
            m.data[SEQ_FROM] = str(m.seq)
        m.token.text += event.text
        m.seq = event.seq
        return True

    def queued(self, outbox: Outbox, event: TaskEvent, env: pb.Envelope) -> None:
        """``env`` (the envelope of ``event``) was just put in ``outbox``."""
        if event.kind != "token":
            return
        if len(self._open) >= _PRUNE_AT:
            taken = outbox.taken
            self._open = {t: e for t, e in self._open.items() if e[0] > taken}
        self._open[event.task_id] = (outbox.added, env)
