"""The revocation list's stream tracking stays cheap with many agents (issue 17).

`Revocations.track` is called for every new stream. It used to sweep the whole map of tracked
serials at every new serial past 1,024: registering 10,000 agents was O(N^2), 62 % of the
daemon's samples in a py-spy profile of bench.agents. The map is now swept when it doubles.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from orchgpt.revocation import Revocations


class _Stream:
    def on_revoked(self) -> None:
        pass


class _CountingDict(dict[int, "tuple[weakref.ref[Any], ...]"]):
    scans = 0

    def items(self):  # type: ignore[override]
        type(self).scans += 1
        return super().items()


def test_tracking_many_live_streams_sweeps_a_logarithmic_number_of_times() -> None:
    rev = Revocations()
    counting = _CountingDict()
    rev._streams = counting
    live = [_Stream() for _ in range(8000)]
    for serial, stream in enumerate(live, start=1):
        rev.track(serial, stream)
    # 1,024 -> 2,048 -> 4,096 -> 8,192: at most a handful of sweeps (the old code: ~7,000).
    assert _CountingDict.scans <= 4, _CountingDict.scans
    assert len(rev._streams) == 8000


def test_dead_streams_are_still_swept_out() -> None:
    rev = Revocations()
    for serial in range(1, 6001):
        rev.track(serial, _Stream())  # dies at once: nothing else holds it
    gc.collect()
    keep = _Stream()
    rev.track(10_000, keep)
    for serial in range(10_001, 12_100):
        rev.track(serial, _Stream())
    # Bounded by the doubling threshold, not by every serial ever seen.
    assert len(rev._streams) < 6000
    assert rev.streams(10_000) == [keep]
