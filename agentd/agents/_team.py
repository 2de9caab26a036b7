"""What the team agents share: the project directory, results handed between them.

The manager gives its sub-agents one project directory: each sub-task carries
option ``workspace`` = the manager's workspace name (`agentd.workspace`).
`project_dir` makes a task work there even when the agent's link laid its
workspace out as ``<root>/<task id>`` without honouring the option, and
`adopt` copies a sub-task's artifacts from the directory it worked in into the
project directory when they differ (same host), checking their sha256.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from orchgpt.checks import checks_of as parse_checks
from orchgpt.models import TaskResult

from ..errors import TaskFailed, ToolError
from ..runtime import TaskContext
from ..workspace import SKIP_DIRS, WORKSPACE_OPTION, Workspace, workspace_id


def project_dir(ctx: TaskContext) -> Path:
    """The directory this task works in (option ``workspace`` honoured); sets ctx.workspace."""
    try:
        wanted = workspace_id(ctx.task)
    except ToolError as exc:
        raise TaskFailed(str(exc)) from None
    ws = Path(ctx.workspace)
    if ws.name != wanted and ws.name == ctx.task.task_id:
        target = ws.parent / wanted  # the link's layout: <root>/<task id>
        if not target.exists():
            target.mkdir(mode=0o700)  # as agentd.workspace.task_workspace makes them
        try:
            ws.rmdir()  # the link created it empty for nothing
        except OSError:
            pass
        ctx.workspace = target
    return Path(ctx.workspace)


def project_option(ctx: TaskContext) -> dict[str, str]:
    """The option that sends a sub-task to this task's project directory."""
    return {WORKSPACE_OPTION: Path(ctx.workspace).name}


def fork(project: Path, name: str) -> Path:
    """A copy of the project next to it (caches, .git and scratch dirs left out), for one sub-task
    that runs alongside others: it works there without seeing their half-written files, and its
    directory diff holds only its own changes; `adopt` brings its artifacts back."""
    target = project.parent / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(project, target, symlinks=True, ignore=shutil.ignore_patterns(*SKIP_DIRS))
    target.chmod(0o700)
    return target


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def adopt(result: TaskResult, project: Path) -> list[str]:
    """Copy a result's artifacts into the project directory when it worked elsewhere on this host.

    Returns the paths copied (empty when it worked in the project directory, or
    its directory is not on this host). A file whose sha256 no longer matches
    the artifact's (changed since) is not copied.
    """
    if not result.workspace:
        return []
    src_root = Path(result.workspace)
    try:
        if not src_root.is_dir() or src_root.resolve() == project.resolve():
            return []
    except OSError:
        return []
    src, dst = Workspace(src_root), Workspace(project)
    copied = []
    for art in result.artifacts:
        try:
            s, d = src.resolve(art.path), dst.resolve(art.path)
        except ToolError:
            continue
        if not s.is_file() or s.is_symlink() or (art.sha256 and _sha256(s) != art.sha256):
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d)
        copied.append(art.path)
    return copied


def upstream(direct: list[str], deps_of: Callable[[str], list[str]]) -> list[str]:
    """A plan item's dependencies and theirs, transitively: the earlier ones' ancestors first,
    then ``direct`` in its order. A sub-task on another host then gets every file it would see
    in the shared project directory on one host (the architect's design, for the frontend)."""
    seen: list[str] = []

    def visit(i: str, hops: int = 0) -> None:
        if i in seen or hops > 64:
            return
        for d in deps_of(i):
            visit(d, hops + 1)
        seen.append(i)

    for i in direct:
        for d in deps_of(i):
            visit(d)
    return [i for i in seen if i not in direct] + list(direct)


async def adopt_or_fetch(ctx: TaskContext, result: TaskResult, project: Path) -> list[str]:
    """`adopt`, then whatever the project still lacks from the daemon: the sub-task ran on
    another host (its directory is not here) or its files changed since."""
    copied = adopt(result, project)
    if ctx.fetch_files is not None and result.artifacts:
        copied += await ctx.fetch_files([result], project)
    return copied


OBJECTS = ".orchgpt/objects"  # content of every sub-task's artifacts by sha256 (not listed, not committed)


def keep(result: TaskResult, project: Path) -> int:
    """Keep the content of a result's artifacts under the project's OBJECTS, by sha256.

    A later sub-task may change a file (the optimizer rewrites the backend's
    app.py); the git agent then still commits each sub-task's own version.
    Returns how many were kept.
    """
    store = project / OBJECTS
    roots = [Path(result.workspace)] if result.workspace else []
    roots.append(project)
    n = 0
    for art in result.artifacts:
        if not art.sha256 or not re.fullmatch(r"[0-9a-f]{64}", art.sha256):
            continue
        target = store / art.sha256
        if target.exists():
            n += 1
            continue
        for root in roots:
            try:
                src = Workspace(root).resolve(art.path)
            except (ToolError, OSError):
                continue
            if src.is_file() and not src.is_symlink() and _sha256(src) == art.sha256:
                store.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                n += 1
                break
    return n


def kept(project: Path, sha256: str) -> bytes | None:
    """The content kept for this sha256, or None."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        return None
    p = project / OBJECTS / sha256
    try:
        data = p.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def input_of(ctx: TaskContext, agent_type: str) -> TaskResult | None:
    """The last successful result of an agent type among the task's inputs."""
    for r in reversed(ctx.task.inputs):
        if r.agent_type == agent_type and r.ok:
            return r
    return None


def read_shared(ctx: TaskContext, path: str, limit: int = 12_000) -> str:
    """A file of the project, or of an input's workspace on this host; "" when there is none."""
    roots = [Path(ctx.workspace)] + [Path(r.workspace) for r in ctx.task.inputs if r.workspace]
    for root in roots:
        try:
            ws = Workspace(root)
            if ws.exists(path):
                return ws.read_text(path, limit)
        except (ToolError, OSError):
            continue
    return ""


_JSON_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n\s*```", re.S)


def json_from_answer(text: str) -> Any:
    """The first JSON value of a model's answer: a fenced block, or the outermost {...} / [...]."""
    candidates = [m.group(1) for m in _JSON_FENCE.finditer(text)]
    s = text.strip()
    candidates.append(s)
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = s.find(open_), s.rfind(close)
        if 0 <= i < j:
            candidates.append(s[i : j + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError("no JSON found in the answer")


def checks_of(result: TaskResult) -> str:
    """What a result says about its checks, in a few words ("" when nothing)."""
    d = result.data
    parts = []
    if "tests_passed" in d:
        parts.append("tests " + ("passed" if d["tests_passed"] == "true" else "failed"))
    if "routes_ok" in d:
        parts.append("routes " + ("answer" if d["routes_ok"] == "true" else "fail"))
    if result.ok and d.get("document") and d.get("diagram") and "endpoints" in d:  # the architect's
        parts.append(
            f"document and diagram complete ({d.get('components', '?')} components, {d['endpoints']} endpoints)"
        )
    structured = parse_checks(result)  # its checks (or older results' JSON), else []
    if structured or d.get("checks"):  # (an agent's free text, for agents of other makers)
        said = {"tests"} if "tests_passed" in d else set()
        said |= {"routes"} if "routes_ok" in d else set()
        rest = ", ".join(f"{c.name} {c.outcome}" for c in structured if c.name not in said)
        if rest or not structured:
            parts.append(rest or d["checks"])
    return "; ".join(parts)


def short(text: str, n: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= n else line[: n - 1] + "…"


def lines(items: Iterable[str]) -> str:
    return "\n".join(f"- {i}" for i in items)
