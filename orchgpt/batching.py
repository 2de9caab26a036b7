"""Moved to orchgpt.wire.batching; this re-export keeps old imports working."""

from .wire.batching import *  # noqa: F403
