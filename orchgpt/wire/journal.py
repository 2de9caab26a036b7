"""The results journal: task results an agent finished but orchgpt has not confirmed yet.

One file per agent name (NAME.results, mode 0600), one line per result: the base64 of a
protobuf TaskResult. Appends are fsynced before the agent reports the result, so that a
result survives the agent, orchgpt, or both dying. A result orchgpt has confirmed is struck
out by a later line ``-TASK_ID`` (a tombstone), and the file is rewritten atomically with the
live results only when it is mostly dead, or removed when nothing in it is live
(journal_writer.py: what agentd keeps open). Written by agentd (agentd/link_results.py), read
by agentd itself after a restart and by orchgpt for the agents it spawned (orchgpt/spawner.py).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path

from .. import logs
from ..models import TaskResult
from . import codec

log = logs.get("orchgpt.journal")

SUFFIX = ".results"


def path_for(directory: Path, name: str) -> Path:
    return directory / f"{name}{SUFFIX}"


def line_of(data: bytes) -> bytes:
    """The journal line of a result's protobuf bytes."""
    return base64.b64encode(data) + b"\n"


def _line(result: TaskResult) -> bytes:
    return line_of(codec.result_to_bytes(result))


def append(path: Path, result: TaskResult) -> None:
    """Add one result and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, _line(result))
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> list[TaskResult]:
    """The results in a journal, the last one per task (none after its tombstone); torn or corrupt
    lines are skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out: dict[str, TaskResult] = {}
    lines = data.split(b"\n")
    if lines[-1]:  # no newline at the end: an append that did not finish
        log.warning("journal_line_skipped", path=str(path), error="torn last line")
    for line in lines[:-1]:
        if not line:
            continue
        if line[:1] == b"-":  # a tombstone: orchgpt confirmed this task's result
            out.pop(line[1:].decode(errors="replace"), None)
            continue
        try:
            result = codec.result_from_bytes(base64.b64decode(line, validate=True))
        except ValueError as exc:  # a corrupt line (codec.DecodeError is a ValueError)
            log.warning("journal_line_skipped", path=str(path), error=str(exc)[:200])
            continue
        out[result.task_id] = result
    return list(out.values())


def rewrite(path: Path, results: Iterable[TaskResult]) -> None:
    """Replace the journal by ``results`` (atomically; removed when empty)."""
    results = list(results)
    if not results:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"".join(_line(r) for r in results))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_dir(directory: Path, prefix: str = "") -> dict[str, list[TaskResult]]:
    """Every journal of a directory (by agent name), optionally only names with ``prefix``."""
    out: dict[str, list[TaskResult]] = {}
    for path in sorted(directory.glob(f"{prefix}*{SUFFIX}")):
        results = read(path)
        if results:
            out[path.name.removesuffix(SUFFIX)] = results
    return out


def remove_dir(directory: Path, prefix: str = "") -> None:
    for path in directory.glob(f"{prefix}*{SUFFIX}"):
        path.unlink(missing_ok=True)


def default_path(name: str, cert: Path) -> Path:
    """Where a hand-started agentd keeps its journal: next to its certificate when that
    directory is writable, else in the user's state directory (platformdirs)."""
    d = cert.resolve().parent
    if os.access(d, os.W_OK):
        return path_for(d, name)
    import platformdirs

    return path_for(Path(platformdirs.user_state_dir("agentd")), name)
