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

import hashlib
import os
from pathlib import Path
from typing import Any

import grpc

from orchgpt import logs
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import Artifact
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
            call = stub.FetchArtifact(
                pb.FetchArtifactRequest(task_id=task_id, path=art.path), timeout=TIMEOUT_S
            )
            async for chunk in call:
                f.write(chunk.data)
                h.update(chunk.data)
                n += len(chunk.data)
                if chunk.eof:
                    break
        digest = h.hexdigest()
        if art.sha256 and digest != art.sha256:
            raise OSError(
                f"sha256 mismatch: the result lists {art.sha256[:12]}..., got {digest[:12]}..."
            )
        os.replace(ws.resolve(part), ws.resolve(art.path))
    finally:
        try:
            os.unlink(ws.resolve(part))
        except (OSError, ToolError):
            pass
    return n


async def fetch(ctx: TaskContext, address: str, certs: Any, server_name: str | None) -> int:
    """Download the files of ``ctx.task.inputs`` that the workspace lacks; how many were
    fetched. A file that cannot be fetched is logged (to the task too) and skipped."""
    wanted: dict[str, tuple[str, Artifact]] = {}
    for r in ctx.task.inputs:
        for a in r.artifacts:
            wanted[a.path] = (r.task_id, a)  # a later input's version wins
    if not wanted:
        return 0
    ws = Workspace(Path(ctx.workspace))
    todo = [(tid, a) for tid, a in wanted.values() if not _present(ws, a)]
    if not todo:
        return 0
    got = 0
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
                    task_id=ctx.task.task_id,
                    input_task=tid,
                    path=a.path,
                    reason=why,
                )
                ctx.log(f"input {a.path} of task {tid} not fetched: {why}")
                continue
            got += 1
            log.info(
                "input_fetched", task_id=ctx.task.task_id, input_task=tid, path=a.path, size=size
            )
    finally:
        await channel.close(grace=None)
    ctx.log(f"fetched {got} input file(s) from the orchestrator")
    return got
