"""Moved to orchgpt.wire.codec; this re-export keeps old imports working."""

from .wire.codec import *  # noqa: F403
