"""What the LLM-driven agents share: model client, tools and loop per task, inputs, files.

class Architect(LLMAgent):
    tools = FILE_TOOLS
    async def run(self, ctx):
        async with self.session(ctx) as s:
            res = await s.loop.run(messages)
            ...
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import ClassVar

from orchgpt.models import Artifact

from ..errors import TaskFailed, ToolError
from ..llm import LLM
from ..loop import TaskLoop
from ..runtime import Agent, TaskContext
from ..settings import AgentSettings
from ..tools import ALL_TOOLS, Toolbox, ToolEnv
from ..workspace import Workspace, artifact_kind


@dataclass
class Session:
    """One task's model client, tools and loop."""

    ctx: TaskContext
    llm: LLM
    env: ToolEnv
    toolbox: Toolbox
    loop: TaskLoop

    @property
    def workspace(self) -> Workspace:
        return self.env.workspace


class LLMAgent(Agent):
    """Base of the agents that work through a model and tools."""

    tools: ClassVar[tuple[str, ...]] = ALL_TOOLS

    def settings_for(self, ctx: TaskContext) -> AgentSettings:
        settings = ctx.settings if ctx.settings is not None else self.settings
        if settings is None or getattr(settings, "smart", None) is None:
            raise TaskFailed(
                f"no model is configured for the {self.type} agent: set OPENAI_API_KEY (OpenAI) "
                "or OPENAI_BASE_URL (an OpenAI-compatible server)"
            )
        return settings

    @contextlib.asynccontextmanager
    async def session(self, ctx: TaskContext, tools: Iterable[str] | None = None) -> AsyncIterator[Session]:
        settings = self.settings_for(ctx)
        if ctx.settings is None:
            ctx.settings = settings
        env = ToolEnv.for_context(ctx)
        toolbox = Toolbox(env, self.tools if tools is None else tools)
        llm = LLM(settings)
        try:
            yield Session(ctx, llm, env, toolbox, TaskLoop(ctx, llm, toolbox))
        finally:
            await llm.aclose()


def inputs_brief(ctx: TaskContext, limit: int = 6000) -> str:
    """The results of earlier sub-tasks (from a delegating manager), as text for the prompt."""
    parts = []
    for r in ctx.task.inputs:
        line = f"- {r.agent_type or 'task'} {r.task_id} ({r.state}): {r.output.strip() or r.error.strip()}"
        if r.artifacts:
            line += "\n  files: " + ", ".join(a.path for a in r.artifacts)
        parts.append(line)
    text = "\n".join(parts)
    return text if len(text) <= limit else text[:limit] + "\n[... cut ...]"


def project_context(ctx: TaskContext, ws: Workspace, inputs_limit: int = 6000, max_files: int = 50) -> str:
    """The tail of an agent's brief: earlier sub-tasks' results and the files already there."""
    text = ""
    earlier = inputs_brief(ctx, inputs_limit)
    if earlier:
        text += f"\n\nResults of earlier steps of this project:\n{earlier}"
    existing = list(ws.files())
    if existing:
        text += "\n\nThe project directory already holds: " + ", ".join(existing[:max_files])
    return text


def record_artifacts(ctx: TaskContext, paths: Iterable[str] | None = None) -> list[Artifact]:
    """Record files of the workspace as the task's artifacts (all of them when paths is None)."""
    ws = Workspace(ctx.workspace)
    out = []
    for p in ws.files() if paths is None else paths:
        with contextlib.suppress(ToolError, OSError):
            rel = ws.relative(ws.resolve(p))
            if ws.resolve(rel).is_file():
                out.append(ctx.artifact(rel, kind=artifact_kind(rel)))
    return out


# ---------------------------------------------------------------- files in a plain answer
# For models that answer with the files in fenced blocks instead of calling write_file.

_FENCE = re.compile(r"^```[ \t]*([^\n`]*)\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_PATHLIKE = re.compile(r"^[\w][\w.\-/]*\.[A-Za-z0-9]+$|^(Dockerfile|Makefile)$")
_LABEL = re.compile(
    r"^[#>*\s-]*(?:\*\*|__)?(?:file(?:name)?|path)?\s*:?\s*(?:\*\*|__)?\s*`?([\w][\w.\-/]*)`?"
    r"\s*(?:\*\*|__)?\s*:?\s*$",
    re.IGNORECASE,
)
_FIRST_LINE = re.compile(
    r"^\s*(?:#|//|--|<!--)\s*(?:file(?:name)?\s*:\s*)?([\w][\w.\-/]*\.\w+)\s*(?:-->)?\s*$", re.IGNORECASE
)


def _path_from_info(info: str) -> str | None:
    for tok in re.split(r"[\s:]+", info.strip()):
        tok = tok.strip("\"'`")
        if "=" in tok:
            key, _, val = tok.partition("=")
            if key.lower() in ("title", "file", "filename", "path", "name"):
                tok = val.strip("\"'`")
        if _PATHLIKE.match(tok) and "/" not in tok[:1] and ".." not in tok:
            return tok
    return None


def fenced_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, body, file name or None) of every fenced block of a model's answer."""
    out = []
    for m in _FENCE.finditer(text):
        info, body = m.group(1).strip(), m.group(2)
        lang = info.split()[0].split(":")[0].lower() if info else ""
        name = _path_from_info(info)
        if name is None:
            before = text[: m.start()].rstrip("\n").splitlines()[-2:]
            for line in reversed(before):
                if line.strip():
                    lm = _LABEL.match(line.strip())
                    if lm and _PATHLIKE.match(lm.group(1)):
                        name = lm.group(1)
                    break
        if name is None:
            first = body.split("\n", 1)[0]
            fm = _FIRST_LINE.match(first)
            if fm and _PATHLIKE.match(fm.group(1)):
                name = fm.group(1)
        if name == lang:  # "```python" alone is not a file called python
            name = None
        out.append((lang, body, name))
    return out


def extract_files(text: str) -> dict[str, str]:
    """Named files of a model's answer: {path: content}."""
    return {name: body for _lang, body, name in fenced_blocks(text) if name}


def write_extracted(ctx: TaskContext, files: dict[str, str]) -> list[str]:
    """Write files a model gave as text into the workspace; the paths written (unsafe ones skipped)."""
    ws = Workspace(ctx.workspace)
    written = []
    for path, content in files.items():
        try:
            ws.write_text(path, content)
        except ToolError as exc:
            ctx.log(f"skipped a file from the answer: {exc}")
            continue
        written.append(path)
    if written:
        ctx.log("wrote files given in the answer: " + ", ".join(written))
    return written
