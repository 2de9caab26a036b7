"""Moved to orchgpt.wire.journal; this re-export keeps old imports working."""

from .wire.journal import *  # noqa: F403
