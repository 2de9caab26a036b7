"""A task's inputs' files, downloaded from the daemon into its workspace before it runs.

The manager (or a workflow) hands a sub-task the results of earlier ones (``Task.inputs``); the
files they list may have been written on another host. Each one is fetched from the daemon's
artifact store (FetchArtifact, which lets an agent read the inputs of a task it runs) into the
workspace at its task-relative path, unless the workspace already holds those bytes (same host,
shared project directory). Later inputs win over earlier ones (a later sub-task's version of a
file). A path from another host is never opened here: only the daemon's bytes are written,
through `Workspace` (no symlink followed, nothing outside the workspace), sha256-checked.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import grpc

from orchgpt import logs
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import Artifact, TaskResult
from orchgpt.tls import secure_channel

from .errors import ToolError
from .runtime import TaskContext
from .workspace import Workspace

log = logs.get("agentd.inputs")
TIMEOUT_S = 300.0


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while piece := f.read(1 << 16):
            h.update(piece)
    return h.hexdigest()


def _present(ws: Workspace, art: Artifact) -> bool:
    try:
        p = ws.resolve(art.path)
        return bool(art.sha256) and p.is_file() and not p.is_symlink() and _sha256(p) == art.sha256
    except (ToolError, OSError):
        return False


async def _download(stub: Any, ws: Workspace, task_id: str, art: Artifact) -> int:
    """One file into the workspace (a ``.part`` beside it, then renamed); its size."""
    part = f"{art.path}.orchgpt-part"
    fd = ws._open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_dirs=True)
    h, n = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as f:
            call = stub.FetchArtifact(pb.FetchArtifactRequest(task_id=task_id, path=art.path), timeout=TIMEOUT_S)
            async for chunk in call:
                f.write(chunk.data)
                h.update(chunk.data)
                n += len(chunk.data)
                if chunk.eof:
                    break
        digest = h.hexdigest()
        if art.sha256 and digest != art.sha256:
            raise OSError(f"sha256 mismatch: the result lists {art.sha256[:12]}..., got {digest[:12]}...")
        os.replace(ws.resolve(part), ws.resolve(art.path))
    finally:
        try:
            os.unlink(ws.resolve(part))
        except (OSError, ToolError):
            pass
    return n


async def download(
    address: str,
    certs: Any,
    server_name: str | None,
    results: list[TaskResult],
    into: Path,
    ctx: TaskContext | None = None,
) -> list[str]:
    """The files the results list that ``into`` lacks, from the daemon (a later result's
    version of a path wins); the paths fetched. A file that cannot be fetched is logged (and
    told to the task, ``ctx``) and skipped."""
    wanted: dict[str, tuple[str, Artifact]] = {}
    for r in results:
        for a in r.artifacts:
            wanted[a.path] = (r.task_id, a)
    ws = Workspace(into)
    todo = [(tid, a) for tid, a in wanted.values() if not _present(ws, a)]
    if not todo:
        return []
    got: list[str] = []
    channel = secure_channel(address, certs, server_name)
    try:
        stub = pb_grpc.MeshStub(channel)
        for tid, a in todo:
            try:
                size = await _download(stub, ws, tid, a)
            except (grpc.aio.AioRpcError, OSError, ToolError) as exc:
                why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                log.warning(
                    "input_not_fetched",
                    task_id=ctx.task.task_id if ctx else "",
                    input_task=tid,
                    path=a.path,
                    reason=why,
                )
                if ctx is not None:
                    ctx.log(f"file {a.path} of task {tid} not fetched: {why}")
                continue
            got.append(a.path)
            log.info("input_fetched", task_id=ctx.task.task_id if ctx else "", input_task=tid, path=a.path, size=size)
    finally:
        await channel.close(grace=None)
    return got


async def fetch(ctx: TaskContext, address: str, certs: Any, server_name: str | None) -> int:
    """Download the files of ``ctx.task.inputs`` that the workspace lacks; how many were
    fetched. Also gives the task ``ctx.fetch_files`` (the same for other results, e.g. the
    manager's sub-tasks', into a directory of its choice)."""
    ctx.fetch_files = functools.partial(download, address, certs, server_name, ctx=ctx)
    if not any(r.artifacts for r in ctx.task.inputs):
        return 0
    got = await download(address, certs, server_name, ctx.task.inputs, Path(ctx.workspace), ctx)
    if got:
        ctx.log(f"fetched {len(got)} input file(s) from the orchestrator: {', '.join(got[:10])}")
    return len(got)
