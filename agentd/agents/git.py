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

import json

from orchgpt.models import TaskResult

from ..runtime import Agent, Outcome, TaskContext, register
from ._team import checks_of, project_dir, short
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
        body.append(f"Usage: {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens, "
                    f"${r.usage.cost_usd:.4f}")
    body.append("Files:")
    body += [f"- {a.path}" for a in r.artifacts]
    return subject + "\n\n" + "\n".join(body) + "\n"


def author_of(r: TaskResult) -> tuple[str, str]:
    t = r.agent_type or "agent"
    return f"orchgpt {t}", f"{t}@orchgpt.local"


@register
class GitAgent(Agent):
    type = "git"
    capabilities = ("git", "vcs", "commit")
    description = "commits each agent's output to a git repository of the project, one commit per sub-task"

    async def run(self, ctx: TaskContext) -> Outcome:
        root = project_dir(ctx)
        git = Git(root)
        created = await git.ensure()
        ctx.status("initialised a git repository" if created else "updating the git repository")
        commits: list[Commit] = []
        skipped: list[str] = []
        if created:
            c = await git.commit([".gitignore"], "git: initialise the project repository", "orchgpt git",
                                 "git@orchgpt.local")
            if c:
                commits.append(c)
        for r in ctx.task.inputs:
            paths = [a.path for a in r.artifacts]
            label = f"{r.agent_type or 'task'} {r.task_id}"
            if not r.ok:
                skipped.append(f"{label}: {r.state}")
                continue
            if not paths:
                skipped.append(f"{label}: no artifacts")
                continue
            name, email = author_of(r)
            c = await git.commit(paths, commit_message(r), name, email)
            if c is None:
                skipped.append(f"{label}: nothing changed")
                continue
            commits.append(c)
            ctx.step(f"committed {c.sha[:10]} {c.message}", sha=c.sha, author=name, files=str(len(c.files)))
        rest_msg = (ctx.task.input.strip() or "orchgpt: update the project") if not ctx.task.inputs else (
            "git: files no agent claimed")
        c = await git.commit(None, rest_msg, "orchgpt git", "git@orchgpt.local")
        if c is not None:
            commits.append(c)
            ctx.step(f"committed {c.sha[:10]} {c.message}", sha=c.sha, author="orchgpt git",
                     files=str(len(c.files)))
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
