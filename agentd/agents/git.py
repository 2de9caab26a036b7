"""git: a git repository of the project, one commit per sub-task's output.

Initialises the repository when the workspace has none (branch ``main``, a
``.gitignore`` for caches), then commits, in order, the artifacts of every
input result (the results of the sub-tasks a manager gives it): one commit
each, authored ``orchgpt <agent type>``, with a subject from the result and a
body naming the task, the agent, the files and the checks. Files no agent
claimed are committed last, by ``orchgpt git``. Without inputs it commits every
change with the task's input as the message (``/git run "message"``).

Local only: no remote, no network, hooks and repository configuration
neutralised (see `_team_git`). No model is needed.

Options: ``workspace`` (the project to commit; set by the manager).
"""

from __future__ import annotations

import hashlib
import json

from orchgpt.models import TaskResult

from ..errors import ToolError
from ..runtime import Agent, Outcome, TaskContext, register
from ..workspace import Workspace
from ._team import checks_of, kept, project_dir, short
from ._team_git import Commit, Git


def commit_message(r: TaskResult) -> str:
    what = short(r.output or r.error or "output", 60)
    subject = f"{r.agent_type or 'agent'}: {what}"
    body = [f"Task: {r.task_id}", f"Agent: {r.agent_id or '?'} ({r.agent_type or '?'})"]
    if r.data.get("attempt", "1") != "1":
        body.append(f"Attempt: {r.data['attempt']}")
    checks = checks_of(r)
    if checks:
        body.append(f"Checks: {checks}")
    if r.usage.calls:
        body.append(
            f"Usage: {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens, "
            f"${r.usage.cost_usd:.4f}"
        )
    body.append("Files:")
    body += [f"- {a.path}" for a in r.artifacts]
    return subject + "\n\n" + "\n".join(body) + "\n"


def author_of(r: TaskResult) -> tuple[str, str]:
    t = r.agent_type or "agent"
    return f"orchgpt {t}", f"{t}@orchgpt.local"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@register
class GitAgent(Agent):
    type = "git"
    capabilities = ("git", "vcs", "commit")
    description = "commits each agent's output to a git repository of the project, one commit per sub-task"
    needs_model = False  # agentd may start it without OPENAI_* settings

    async def run(self, ctx: TaskContext) -> Outcome:
        root = project_dir(ctx)
        git = Git(root)
        created = await git.ensure()
        ctx.status("initialised a git repository" if created else "updating the git repository")
        commits: list[Commit] = []
        skipped: list[str] = []
        if created:
            c = await git.commit(
                [".gitignore"], "git: initialise the project repository", "orchgpt git", "git@orchgpt.local"
            )
            if c:
                commits.append(c)
        ws = Workspace(root)
        final = self._current(ws, ctx.task.inputs)
        replayed = 0
        for r in ctx.task.inputs:
            paths = [a.path for a in r.artifacts]
            label = f"{r.agent_type or 'task'} {r.task_id}"
            if not r.ok:
                skipped.append(f"{label}: {r.state}")
                continue
            if not paths:
                skipped.append(f"{label}: no artifacts")
                continue
            replayed += self._replay(ws, r)
            name, email = author_of(r)
            c = await git.commit(paths, commit_message(r), name, email)
            if c is None:
                skipped.append(f"{label}: nothing changed")
                continue
            commits.append(c)
            ctx.step(f"committed {c.sha[:10]} {c.message}", sha=c.sha, author=name, files=str(len(c.files)))
        self._restore(ws, final)
        if replayed:
            ctx.log(f"committed {replayed} file version(s) as their sub-task left them (changed later by another)")
        rest_msg = (
            (ctx.task.input.strip() or "orchgpt: update the project")
            if not ctx.task.inputs
            else ("git: files no agent claimed")
        )
        c = await git.commit(None, rest_msg, "orchgpt git", "git@orchgpt.local")
        if c is not None:
            commits.append(c)
            ctx.step(f"committed {c.sha[:10]} {c.message}", sha=c.sha, author="orchgpt git", files=str(len(c.files)))
        if (root / ".gitignore").is_file():
            ctx.artifact(".gitignore", kind="code")
        head = await git.head()
        n = len(commits)
        out = f"{n} commit(s) on main, head {head[:10] or '(none)'}"
        if skipped:
            out += f"; not committed: {'; '.join(skipped)}"
        data = {
            "head": head,
            "branch": "main",
            "commits": json.dumps([c.__dict__ for c in commits]),
            "created": str(created).lower(),
            "checks": f"{n} commit(s)",
        }
        if skipped:
            data["skipped"] = "; ".join(skipped)
        return Outcome(output=out, data=data)

    # ---------------------------------------------------------------- versions
    # Sub-tasks hand their files on: a later one may rewrite an earlier one's file (the optimizer
    # rewrites the backend's app.py). Each commit holds the version its sub-task produced (kept by the
    # manager by sha256, see _team.keep); the working tree ends as it was found.

    @staticmethod
    def _current(ws: Workspace, inputs: list[TaskResult]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for r in inputs:
            for a in r.artifacts:
                if a.path not in out:
                    try:
                        out[a.path] = ws.read_bytes(a.path) if ws.exists(a.path) else None
                    except ToolError:
                        out[a.path] = None
        return out

    @staticmethod
    def _replay(ws: Workspace, r: TaskResult) -> int:
        """Put this result's own version of its files in the tree; returns how many differed."""
        n = 0
        for a in r.artifacts:
            data = kept(ws.root, a.sha256)
            if data is None:
                continue
            try:
                current = ws.read_bytes(a.path) if ws.exists(a.path) else None
                if current is None or _sha(current) != a.sha256:
                    ws.write_bytes(a.path, data)
                    n += 1
            except ToolError:
                continue
        return n

    @staticmethod
    def _restore(ws: Workspace, final: dict[str, bytes | None]) -> None:
        for path, data in final.items():
            try:
                if data is None:
                    if ws.exists(path):
                        ws.resolve(path).unlink()
                elif not ws.exists(path) or ws.read_bytes(path) != data:
                    ws.write_bytes(path, data)
            except ToolError:
                continue
