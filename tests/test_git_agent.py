"""The git agent: a real git repository, one commit per sub-task, nothing planted runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from agentd.agents.git import GitAgent
from agentd.runtime import Outcome, TaskContext
from orchgpt.models import Artifact, EventKind, Task, TaskEvent, TaskResult, TaskState, Usage

pytestmark = pytest.mark.timeout(60)


def art(root: Path, path: str, content: str) -> Artifact:
    p = root / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)
    return Artifact(path, len(content.encode()), hashlib.sha256(content.encode()).hexdigest())


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", f"safe.directory={root}", *args], capture_output=True, text=True, check=True
    ).stdout


def run_git_agent(
    root: Path, inputs: list[TaskResult], text: str = "", task_id: str = "g1"
) -> tuple[Outcome, list[TaskEvent]]:
    events: list[TaskEvent] = []
    ctx = TaskContext(Task(task_id=task_id, agent_type="git", input=text, inputs=inputs), root, "git-1", events.append)
    out = asyncio.run(asyncio.wait_for(GitAgent().run(ctx), 30))
    return out, events


def test_one_commit_per_sub_task_authored_by_its_agent(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    arch = TaskResult(
        "t-arch",
        TaskState.SUCCEEDED,
        output="wrote ARCHITECTURE.md (2 components)",
        artifacts=[art(root, "ARCHITECTURE.md", "# A\n"), art(root, "architecture.mmd", "flowchart LR\n")],
        agent_type="architect",
        agent_id="local-architect-1",
        usage=Usage(100, 20, 0.001, "gpt-4o-mini", 2),
    )
    back = TaskResult(
        "t-back",
        TaskState.SUCCEEDED,
        output="tests passed (1 passed)",
        artifacts=[art(root, "app.py", "print(1)\n"), art(root, "test_app.py", "def test(): pass\n")],
        agent_type="backend",
        agent_id="remote-backend",
        data={"tests_passed": "true", "attempt": "2"},
    )
    failed = TaskResult(
        "t-front",
        TaskState.FAILED,
        error="boom",
        agent_type="frontend",
        artifacts=[art(root, "frontend/index.html", "<html></html>")],
    )
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / "notes.txt").write_text("stray\n")
    out, events = run_git_agent(root, [arch, back, failed])
    assert out.ok, out.error
    log = git(root, "log", "--reverse", "--format=%an|%s").splitlines()
    assert log == [
        "orchgpt git|git: initialise the project repository",
        "orchgpt architect|architect: wrote ARCHITECTURE.md (2 components)",
        "orchgpt backend|backend: tests passed (1 passed)",
        "orchgpt git|git: files no agent claimed",
    ]
    # Each commit holds its sub-task's files only.
    assert git(root, "show", "--name-only", "--format=", "HEAD~2").split() == ["ARCHITECTURE.md", "architecture.mmd"]
    body = git(root, "show", "-s", "--format=%B", "HEAD~1")
    assert "Task: t-back" in body and "Agent: remote-backend (backend)" in body
    assert "Checks: tests passed" in body and "Attempt: 2" in body and "- test_app.py" in body
    # The failed sub-task's files and strays go in the last commit; caches are ignored.
    last = git(root, "show", "--name-only", "--format=", "HEAD").split()
    assert set(last) == {"frontend/index.html", "notes.txt"}
    assert "__pycache__" not in git(root, "ls-files")
    assert git(root, "status", "--porcelain") == ""
    commits = json.loads(out.data["commits"])
    assert len(commits) == 4 and out.data["head"] == commits[-1]["sha"]
    assert "frontend t-front: failed" in out.data["skipped"]
    assert sum(1 for e in events if e.kind == EventKind.STEP and e.text.startswith("committed")) == 3


def test_updates_an_existing_repository_and_commits_only_changes(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    a = TaskResult(
        "t1", TaskState.SUCCEEDED, output="v1", agent_type="backend", artifacts=[art(root, "app.py", "v1\n")]
    )
    run_git_agent(root, [a])
    n1 = len(git(root, "log", "--format=%H").split())
    # Same content again: nothing to commit; changed content: one more commit.
    out, _ = run_git_agent(root, [a], task_id="g2")
    assert "nothing changed" in out.data["skipped"] and len(git(root, "log", "--format=%H").split()) == n1
    b = TaskResult(
        "t2", TaskState.SUCCEEDED, output="v2", agent_type="optimizer", artifacts=[art(root, "app.py", "v2\n")]
    )
    out, _ = run_git_agent(root, [b], task_id="g3")
    assert out.data["created"] == "false"
    assert git(root, "log", "-1", "--format=%an|%s").strip() == "orchgpt optimizer|optimizer: v2"
    # Without inputs: every change, with the task's input as the message.
    (root / "README.md").write_text("hello\n")
    out, _ = run_git_agent(root, [], text="docs: add a readme", task_id="g4")
    assert git(root, "log", "-1", "--format=%an|%s").strip() == "orchgpt git|docs: add a readme"


def test_each_commit_holds_the_version_its_sub_task_produced(tmp_path: Path) -> None:
    """The optimizer rewrote the backend's app.py: the backend's commit still holds the backend's version."""
    from agentd.agents._team import keep

    root = tmp_path / "proj"
    root.mkdir()
    back = TaskResult(
        "t-back",
        TaskState.SUCCEEDED,
        output="api",
        agent_type="backend",
        artifacts=[art(root, "app.py", "v1\n"), art(root, "test_app.py", "t\n")],
    )
    assert keep(back, root) == 2
    opt = TaskResult(
        "t-opt",
        TaskState.SUCCEEDED,
        output="modules",
        agent_type="optimizer",
        artifacts=[art(root, "app.py", "v2\n"), art(root, "store.py", "s\n")],
    )
    keep(opt, root)
    (root / "notes.md").write_text("later\n")
    out, _ = run_git_agent(root, [back, opt])
    assert out.ok
    assert git(root, "show", "HEAD~2:app.py") == "v1\n" and git(root, "show", "HEAD~1:app.py") == "v2\n"
    assert git(root, "log", "--format=%an", "-n3").split("\n")[:3] == [
        "orchgpt git",
        "orchgpt optimizer",
        "orchgpt backend",
    ]
    assert (root / "app.py").read_text() == "v2\n" and git(root, "status", "--porcelain") == ""
    assert ".orchgpt" not in git(root, "ls-files")


def test_planted_hooks_and_config_do_not_run(tmp_path: Path) -> None:
    """Sandboxed code can write .git: a hook or a filter driver it plants must not run here."""
    root = tmp_path / "proj"
    root.mkdir()
    run_git_agent(root, [], text="init")
    pwned = tmp_path / "pwned"
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {pwned}\n")
    hook.chmod(0o755)
    with open(root / ".git" / "config", "a") as f:
        f.write(f'[filter "evil"]\n\tclean = "touch {pwned}.filter; cat"\n[core]\n\thooksPath = .git/hooks\n')
    (root / ".gitattributes").write_text("*.py filter=evil\n")
    (root / "x.py").write_text("x = 1\n")
    out, _ = run_git_agent(root, [], text="add x", task_id="g5")
    assert out.ok
    assert "x.py" in git(root, "ls-files")
    assert not pwned.exists() and not Path(f"{pwned}.filter").exists()
    assert "evil" not in (root / ".git" / "config").read_text()


def test_option_workspace_selects_the_project_directory(tmp_path: Path) -> None:
    """Laid out as <root>/<task id> by the link, the task still works in the project named by the option."""
    (tmp_path / "proj-1").mkdir()
    (tmp_path / "proj-1" / "a.txt").write_text("a\n")
    own = tmp_path / "g9"
    own.mkdir()
    events: list[TaskEvent] = []
    ctx = TaskContext(
        Task(task_id="g9", agent_type="git", input="import", options={"workspace": "proj-1"}),
        own,
        "git-1",
        events.append,
    )
    out = asyncio.run(asyncio.wait_for(GitAgent().run(ctx), 30))
    assert out.ok and ctx.workspace == tmp_path / "proj-1"
    assert not own.exists()
    assert "a.txt" in git(tmp_path / "proj-1", "ls-files")
