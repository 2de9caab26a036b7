"""Structured logs: one line per event (JSON by default), never a secret."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_KEYS = ("api_key", "password", "secret", "token_value", "authorization", "key_pem")
_secret: dict[str, bool] = {}  # key -> whether it names a secret (decided once per key: the hot path)


def _is_secret(k: str) -> bool:
    low = k.lower()
    yes = any(s in low for s in _SECRET_KEYS)
    if len(_secret) < 4096:
        _secret[k] = yes
    return yes


def _redact(_: Any, __: str, event_dict: Any) -> Any:
    secret = _secret
    for k in list(event_dict):
        yes = secret.get(k)
        if yes is None:
            yes = _is_secret(k) if isinstance(k, str) else any(s in str(k).lower() for s in _SECRET_KEYS)
        if yes:
            event_dict[k] = "[redacted]"
    return event_dict


def configure(level: str = "info", fmt: str = "json", service: str = "orchgpt") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    from .tracing import log_ids  # trace and span ids, while tracing is on

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            log_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get(name: str) -> Any:
    return structlog.get_logger(name)
