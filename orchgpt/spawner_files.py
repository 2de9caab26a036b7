"""What local agents keep on disk: their certificates (one directory per CA, by its
fingerprint), the journals of results they finished, and their log lines (part of
spawner.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import journal
from .certs import CA
from .mesh_registry import LOCAL_PREFIX
from .models import TaskResult

JOURNAL_SUFFIX = journal.SUFFIX


def read_journals(directory: Path) -> dict[str, list[TaskResult]]:
    """Results that spawned agents of a previous orchgpt wrote before it died (by agent id)."""
    return journal.read_dir(directory, LOCAL_PREFIX)


def remove_journals(directory: Path) -> None:
    journal.remove_dir(directory, LOCAL_PREFIX)


def ca_fingerprint(ca: CA) -> str:
    """The CA's identity for naming its agents' certificate directory (SHA-256 of the DER)."""
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(ca.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _summarize(line: str) -> str:
    """A JSON log line as 'event: detail' (agentd logs JSON); other lines as they are."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict):
        return line
    event = str(rec.get("event", ""))
    detail = next((str(rec[k]) for k in ("detail", "error", "message", "reason") if rec.get(k)), "")
    return f"{event}: {detail}" if event and detail else event or detail or line


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _is_fingerprint_dir(name: str) -> bool:
    return len(name) == 16 and all(c in "0123456789abcdef" for c in name)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
