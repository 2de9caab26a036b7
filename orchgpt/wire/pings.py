"""The daemon's PING envelopes, shared: the heartbeat sweep pings many agents at once, and one
envelope (one id, one timestamp) serves every agent pinged within the same second with the same
announcement. It carries no recipient (an agent's own stream names it) and is never changed once
built, so it may sit in many outboxes at once (an Outbox copies it into the Batch it sends)."""

from __future__ import annotations

import time

from ..iac.v1 import iac_pb2 as pb
from .codec_basics import new_envelope

_cache: dict[int, tuple[int, pb.Envelope]] = {}  # interval_ms -> (second, envelope)


def shared(interval_ms: int = 0, sender: str = "orchgpt") -> pb.Envelope:
    """A PING (``heartbeat_interval_ms`` = ``interval_ms`` when > 0) built at most once a second."""
    sec = int(time.monotonic())
    hit = _cache.get(interval_ms)
    if hit is not None and hit[0] == sec:
        return hit[1]
    ping = pb.Ping(sent_ms=int(time.time() * 1000), heartbeat_interval_ms=interval_ms)
    env = new_envelope(pb.PING, sender, ping=ping)
    if len(_cache) > 64:  # announcements of many different intervals: keep the cache small
        _cache.clear()
    _cache[interval_ms] = (sec, env)
    return env
