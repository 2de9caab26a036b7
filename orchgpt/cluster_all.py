"""Watch of every task across the daemons of a cluster (issue 19, docs/scaling.md "Watch of
every task").

A daemon with a client watching every task (``Watch`` without a task id) asks the others
for everything: ``NOTIFY orchgpt_follow`` with ``*``, at once when the first such watcher
subscribes and again every ``RENEW_S`` while one is there. A daemon so asked sends live
(cluster_live.py) every event but token deltas of every task it runs, RESULT included, for
``LEASE_S`` after the last ask; the token deltas of the tasks it streams anyway (watched
per task elsewhere) go too. The asking daemon hands each live event of a task it does not
run itself to its every-task watchers (and, as before, to the per-task followers).

Best effort, like one daemon's every-task stream (which has no replay either): an event
over the NOTIFY payload limit, or one sent while the ask is still on its way, is not
delivered to the every-task watchers (it is stored; ``GetTask`` and a per-task ``Watch``
with ``after_seq`` have it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from . import logs
from .cluster_live import decode, task_of
from .errors import StoreError
from .models import TaskEvent

if TYPE_CHECKING:
    from .cluster_events import StoreFollowers
    from .cluster_live import LiveSender
    from .mesh import Mesh

log = logs.get("orchgpt.cluster")

EVERY = "*"  # the FOLLOW_CHANNEL payload that asks for every task's events
LEASE_S = 6.0  # a daemon asked sends every task's events this long after the last ask
RENEW_S = 2.0  # an asking daemon asks again this often while it has every-task watchers


class WatchAll:
    def __init__(
        self,
        mesh: Mesh,
        live: LiveSender,
        followers: StoreFollowers,
        notify: Callable[[str], Awaitable[None]],
    ) -> None:
        self.mesh = mesh
        self.live = live
        self.followers = followers
        self.notify = notify  # NOTIFY orchgpt_follow with this payload
        self._asked = 0.0  # when this daemon last asked the others (monotonic)
        self._bg: set[asyncio.Task[None]] = set()

    # --------------------------------------------------------------- the asking daemon
    def subscribed(self) -> None:
        """A client here watches every task: ask the others now (not at the next tick)."""
        self._ask()

    def tick(self) -> None:
        if self.mesh.fanout.subs_all and time.monotonic() - self._asked >= RENEW_S:
            self._ask()

    def _ask(self) -> None:
        self._asked = time.monotonic()
        try:
            t = asyncio.get_running_loop().create_task(self._send())
        except RuntimeError:  # no loop: the next tick asks
            self._asked = 0.0
            return
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _send(self) -> None:
        try:
            await self.notify(EVERY)
        except StoreError as exc:  # the next tick asks again
            self._asked = 0.0
            log.warning("cluster_watch_all_ask_failed", error=str(exc).splitlines()[0] if str(exc) else "")

    def on_live(self, payload: str, pid: int) -> None:
        """A live payload (cluster_live.py) sent by backend ``pid``: its events to the task's
        followers here, and to the every-task watchers when another daemon sent it (this
        daemon's own, heard back on its LISTEN, reached them through its fan-out)."""
        task_id = task_of(payload)
        followed = task_id in self.followers
        every = bool(self.mesh.fanout.subs_all) and pid != self.live.backend_pid()
        if not (followed or every):
            return
        for ev in decode(payload):  # a task's events, folded (in seq order)
            if every:
                self._to_all(ev)
            if followed:
                self.followers.live(ev)

    def _to_all(self, ev: TaskEvent) -> None:
        fanout = self.mesh.fanout
        for s in list(fanout.subs_all):
            if not s.deliver(ev):
                fanout.dropped += 1
                fanout.subs_all.discard(s)
                s.close("client too slow: event buffer full")

    # --------------------------------------------------------------- the asked daemon
    def asked(self) -> None:
        """Another daemon has every-task watchers: send every task's events for a while."""
        if self.live.every_until < time.monotonic():
            log.info("cluster_watch_all_asked")
        self.live.every_until = time.monotonic() + LEASE_S
