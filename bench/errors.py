"""The benchmark harness's errors."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark phase failed or ran out of time; the message says which and why."""
