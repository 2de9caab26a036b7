"""agentd's heartbeats and its watch on the daemon (docs/protocol.md §5).

One message a tick (the interval from REGISTERED, or the one a PING announced later), and only
from the agent: the daemon judges the agent by what it receives and sends it no routine PINGs
(REGISTERED.agent_pings). A tick sends a HEARTBEAT only when nothing else went out since the last
(any traffic is life); it carries the interval the agent is on (Heartbeat.heartbeat_interval_ms:
"I watch you myself", and the acknowledgement of an announced interval). The agent watches the
daemon: after 1.5 intervals without a frame from it, the tick's message is a PING, which the
daemon's event loop answers with a PONG (gRPC keepalive alone would not notice a hung loop);
a tick that finds 3 intervals of silence gives up on the stream, and the link reconnects (to the
next daemon of a cluster). A hung or gone daemon is so noticed within 3 to 4 intervals.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from orchgpt import logs
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.wire.batching import Outbox

if TYPE_CHECKING:
    from .link import Link

log = logs.get("agentd.link")

ASK_AFTER = 1.5  # intervals of silence from the daemon before the tick's message is a PING
GIVE_UP_AFTER = 3.0  # intervals of silence after which the stream is given up (reconnect)


async def beat(link: Link, outbox: Outbox, call: Any) -> None:
    """Heartbeat on ``outbox`` and watch the daemon until the stream is given up (``call`` cancelled)."""
    # The interval comes with REGISTERED (sleeping the default first could outlast orchgpt's)
    try:
        await asyncio.wait_for(link.connected.wait(), timeout=30)
    except TimeoutError:
        call.cancel()  # no REGISTERED: reconnect
        return
    while True:
        sent = outbox.added  # a HEARTBEAT only when nothing else was sent (traffic is life)
        await asyncio.sleep(link.heartbeat_s)
        silent = time.monotonic() - link.last_rx
        if silent > link.heartbeat_s * GIVE_UP_AFTER:
            log.warning("orchestrator_silent", seconds=round(silent, 1))
            call.cancel()
            return
        if silent >= link.heartbeat_s * ASK_AFTER:
            outbox.put(link._env(pb.PING))  # "are you there?": its PONG feeds the watch
            continue
        if outbox.added == sent:
            ids = link.running_ids()
            hb = pb.Heartbeat(
                state=pb.BUSY if ids else pb.IDLE,
                current_task=ids[0] if ids else "",
                running_tasks=ids,
                heartbeat_interval_ms=int(link.heartbeat_s * 1000),
            )
            outbox.put(link._env(pb.HEARTBEAT, heartbeat=hb))
