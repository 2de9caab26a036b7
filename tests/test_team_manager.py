"""The manager's plan validation and scheduling.

The plan comes from the scripted model server over real HTTP. Delegation is the
mesh boundary: here a recording function plays the mesh (the e2e tests in
test_team_e2e.py run the real one), so that ordering, parallelism, retries,
skips and the report can be checked precisely.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.agents._team_plan import default_plan, find_cycle, normalise, parse_plan
from agentd.agents.manager import ManagerAgent
from agentd.runtime import Outcome, TaskContext
from agentd.settings import AgentSettings
from orchgpt.models import (
    Artifact,
    Delegation,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
)
from tests.support.scripted_openai import ScriptedOpenAI, text

pytestmark = pytest.mark.timeout(30)

ALLOWED = {"architect", "designer", "backend", "frontend", "git", "optimizer", "mailer"}


# ---------------------------------------------------------------- plan validation


def plan(*tasks: dict[str, Any]) -> str:
    return json.dumps({"tasks": list(tasks)})


def t(id: str, agent: str, deps: list[str] | None = None, task: str = "do it") -> dict[str, Any]:
    return {"id": id, "agent": agent, "task": task, "depends_on": deps or []}


def test_a_valid_plan_in_prose_and_a_fence_is_read() -> None:
    answer = "Here is the plan:\n```json\n" + plan(t("a", "architect"), t("b", "backend", ["a"])) + "\n```\nGood luck."
    items, problems = parse_plan(answer, ALLOWED)
    assert problems == []
    assert [(i.id, i.agent_type, i.depends_on) for i in items] == [("a", "architect", []), ("b", "backend", ["a"])]
    # other spellings models use
    items, problems = parse_plan(
        json.dumps([{"name": "x", "type": "Backend", "description": "y", "deps": None}]), ALLOWED
    )
    assert problems == [] and items[0].agent_type == "backend" and items[0].depends_on == []


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("I would start with the architecture.", "no JSON plan"),
        (json.dumps({"steps": []}), 'no "tasks" list'),
        (plan(t("a", "wizard")), "unknown agent type 'wizard'"),
        (plan(t("a", "architect"), t("a", "backend")), "id 'a' is used twice"),
        (plan(t("a", "architect", ["zz"])), "depends on 'zz', which is not in the plan"),
        (plan(t("a", "architect", ["a"])), "'a' depends on itself"),
        (
            plan(t("a", "architect", ["c"]), t("b", "backend", ["a"]), t("c", "frontend", ["b"])),
            "cycle: a -> c -> b -> a",
        ),
        (plan(*(t(f"x{i}", "backend") for i in range(13))), "13 sub-tasks; at most 12"),
        (plan({"id": "a", "agent": "backend"}), "says nothing about what to do"),
        (plan({"id": "a", "agent": "backend", "task": "x", "depends_on": 3}), "depends_on must be a list"),
    ],
)
def test_unusable_plans_are_named(answer: str, problem: str) -> None:
    _, problems = parse_plan(answer, ALLOWED)
    assert any(problem in p for p in problems), problems


def test_sub_tasks_that_may_run_alongside_another() -> None:
    from agentd.agents.manager import concurrent

    assert concurrent(default_plan("x")) == {"designer", "backend"}
    items, _ = parse_plan(
        plan(
            t("a", "architect"),
            t("b", "backend", ["a"]),
            t("c", "frontend", ["b"]),
            t("o", "optimizer", ["b"]),
            t("g", "git", ["c", "o"]),
        ),
        ALLOWED,
    )
    assert concurrent(items) == {"c", "o"}


def test_git_and_mailer_wait_for_everything() -> None:
    items, _ = parse_plan(
        plan(t("a", "architect"), t("b", "backend", ["a"]), t("g", "git", ["b"]), t("m", "mailer")), ALLOWED
    )
    notes = normalise(items)
    deps = {i.id: i.depends_on for i in items}
    assert deps["g"] == ["b", "a"] and set(deps["m"]) == {"a", "b", "g"}
    assert notes == ["g (git) now also waits for a", "m (mailer) now also waits for a, b"]
    assert find_cycle(items) == []
    assert [i.agent_type for i in default_plan("x")] == ["architect", "designer", "backend", "frontend", "git"]


# ---------------------------------------------------------------- the manager, with a recording delegate

Behaviour = Callable[[Delegation, int], Awaitable[TaskResult]]


class Team:
    """Plays the mesh: answers each delegated sub-task after a delay, records what it was given."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, Delegation, float, float]] = []  # (type, sub, start, end)
        self.n: dict[str, int] = {}
        self.special: dict[str, Behaviour] = {}

    async def __call__(self, sub: Delegation) -> TaskResult:
        start = time.monotonic()
        n = self.n[sub.agent_type] = self.n.get(sub.agent_type, 0) + 1
        if sub.agent_type in self.special:
            r = await self.special[sub.agent_type](sub, n)
        else:
            await asyncio.sleep(0.2)
            r = self.ok(sub.agent_type, n)
        self.calls.append((sub.agent_type, sub, start, time.monotonic()))
        return r

    def ok(self, agent_type: str, n: int, **data: str) -> TaskResult:
        path = f"{agent_type}.txt"
        (self.root / path).write_text(agent_type)
        return TaskResult(
            f"{agent_type}-{n}",
            TaskState.SUCCEEDED,
            output=f"{agent_type} did it",
            artifacts=[Artifact(path, len(agent_type), "ab" * 32, "document")],
            usage=Usage(100, 50, 0.0001, "gpt-4o-mini", 1),
            agent_type=agent_type,
            agent_id=f"local-{agent_type}-1",
            data={"attempt": "1", **data},
        )

    def of(self, agent_type: str) -> list[Delegation]:
        return [c[1] for c in self.calls if c[0] == agent_type]

    def span(self, agent_type: str) -> tuple[float, float]:
        [(_, _, s, e)] = [c for c in self.calls if c[0] == agent_type]
        return s, e


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI(models=("gpt-4o-mini",)) as s:
        yield s


def run_manager(
    tmp_path: Path, srv: ScriptedOpenAI | None, team: Team | None = None, options: dict[str, str] | None = None
) -> tuple[Outcome, list[TaskEvent], Team]:
    project = tmp_path / "mgr1"
    project.mkdir(exist_ok=True)
    team = team or Team(project)
    settings = AgentSettings.for_endpoint(srv.base_url, api_key="sk-scripted", workspace_root=tmp_path) if srv else None
    events: list[TaskEvent] = []
    ctx = TaskContext(
        Task(task_id="mgr1", agent_type="manager", input="todo app", options=options or {}),
        project,
        "manager-1",
        events.append,
        delegate=team,
        settings=settings,
    )
    out = asyncio.run(asyncio.wait_for(ManagerAgent(settings).run(ctx), 20))
    return out, events, team


def test_runs_the_plan_in_dependency_order_with_parallel_branches(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    srv.push(
        text(
            plan(
                t("arch", "architect"),
                t("ui", "designer", ["arch"]),
                t("api", "backend", ["arch"]),
                t("web", "frontend", ["ui", "api"]),
                t("commit", "git"),
            )
        )
    )
    out, events, team = run_manager(tmp_path, srv)
    assert out.ok, out.error
    assert out.data["plan_source"] == "model"
    # designer and backend overlap; frontend after both; git after everything
    ui, api, web, commit = team.span("designer"), team.span("backend"), team.span("frontend"), team.span("git")
    assert ui[0] < api[1] and api[0] < ui[1]
    assert web[0] >= max(ui[1], api[1]) and commit[0] >= web[1]
    # inputs: the dependencies' results, after theirs (the frontend gets the architect's too: on
    # another host it fetches the files it would see in the project); git gets every result, in
    # plan order; all share the project
    assert [r.agent_type for r in team.of("frontend")[0].inputs] == ["architect", "designer", "backend"]
    assert [r.agent_type for r in team.of("git")[0].inputs] == ["architect", "designer", "backend", "frontend"]
    # the sub-tasks that run alongside another one work in a copy of the project
    assert {s.options["workspace"] for _, s, _, _ in team.calls} == {"mgr1", "mgr1.ui", "mgr1.api"}
    assert team.of("designer")[0].options["workspace"] == "mgr1.ui"
    assert (tmp_path / "mgr1.api" / "architect.txt").read_text() == "architect"  # forked after the architect
    assert not (tmp_path / "mgr1.api" / "designer.txt").exists() or team.span("designer")[1] <= team.span("backend")[0]
    assert all("todo app" in s.input for _, s, _, _ in team.calls)
    assert any(e.kind == EventKind.LOG and "commit (git) now also waits for" in e.text for e in events)
    subs = {s["id"]: s for s in json.loads(out.data["subtasks"])}
    assert subs["api"]["artifacts"][0]["path"] == "backend.txt" and subs["api"]["cost_usd"] == 0.0001
    # the manager's own planning call counts too
    assert int(out.data["prompt_tokens"]) > 5 * 100 and float(out.data["cost_usd"]) > 5 * 0.0001
    report = (tmp_path / "mgr1" / "REPORT.md").read_text()
    assert (
        "Plan: from the model" in report and "| api | backend | local-backend-1 | backend-1 | succeeded | 1 |" in report
    )
    assert "`backend.txt`" in report and "| backend | 1 | 100 | 50 | 0.0001 |" in report
    assert "| manager | 1 |" in report
    assert out.output.startswith("5 of 5 sub-tasks succeeded")


def test_unusable_plan_goes_back_to_the_model_then_the_default_plan_is_used(
    tmp_path: Path, srv: ScriptedOpenAI
) -> None:
    srv.push(text("First the architecture, then the code."), text(plan(t("a", "wizard"))))
    out, events, team = run_manager(tmp_path, srv)
    assert out.ok and out.data["plan_source"] == "default"
    assert "unknown agent type 'wizard'" in out.data["plan_note"]
    assert "This plan cannot be used" in srv.chat_requests[1]["messages"][-1]["content"]
    assert "no JSON plan" in srv.chat_requests[1]["messages"][-1]["content"]
    assert any(e.kind == EventKind.LOG and e.text.startswith("using the default plan") for e in events)
    assert [c[0] for c in team.calls][:1] == ["architect"] and set(team.n) == {
        "architect",
        "designer",
        "backend",
        "frontend",
        "git",
    }
    assert "the default plan (" in (tmp_path / "mgr1" / "REPORT.md").read_text()


def test_without_a_model_the_default_plan_is_used(tmp_path: Path) -> None:
    out, _, team = run_manager(tmp_path, None)
    assert out.ok and out.data["plan_source"] == "default" and "no model is configured" in out.data["plan_note"]
    assert len(team.calls) == 5


def test_a_failed_sub_task_is_retried_with_the_error_then_reported(tmp_path: Path) -> None:
    project = tmp_path / "mgr1"
    project.mkdir()
    team = Team(project)

    async def flaky(sub: Delegation, n: int) -> TaskResult:
        if n == 1:
            return TaskResult(
                "backend-1",
                TaskState.FAILED,
                error="tests failed: 1 failed, 2 passed",
                agent_type="backend",
                agent_id="local-backend-1",
                usage=Usage(10, 5, 0.00001, "m", 1),
            )
        return team.ok("backend", n, attempt="2", requeued="agent local-backend-2 lost: connection lost")

    team.special["backend"] = flaky
    out, events, _ = run_manager(tmp_path, None, team, {"plan": "default"})
    assert out.ok, out.error
    retry = team.of("backend")[1]
    assert "An earlier attempt at this failed: tests failed: 1 failed, 2 passed" in retry.input
    subs = {s["agent_type"]: s for s in json.loads(out.data["subtasks"])}
    b = subs["backend"]
    assert b["attempts"] == 2 and b["retried_after"] == ["tests failed: 1 failed, 2 passed"]
    assert b["mesh_attempts"] == [1, 2] and b["requeued"] == ["agent local-backend-2 lost: connection lost"]
    assert b["prompt_tokens"] == 110  # both attempts count
    assert out.data["retries"] == "1" and out.data["requeues"] == "1"
    assert "1 retried, 1 requeued by the mesh" in out.output
    report = (project / "REPORT.md").read_text()
    assert "backend: attempt 1 (`backend-1` on `local-backend-1`) failed: tests failed" in report
    assert "was requeued by the mesh (agent local-backend-2 lost: connection lost)" in report
    assert any(
        e.kind == EventKind.STEP and "failed: tests failed" in e.text and e.data.get("state") == "retrying"
        for e in events
    )


def test_when_retries_run_out_dependents_are_skipped_and_git_commits_the_rest(tmp_path: Path) -> None:
    project = tmp_path / "mgr1"
    project.mkdir()
    team = Team(project)

    async def broken(sub: Delegation, n: int) -> TaskResult:
        return TaskResult(f"backend-{n}", TaskState.FAILED, error=f"broken {n}", agent_type="backend")

    team.special["backend"] = broken
    out, _, _ = run_manager(tmp_path, None, team, {"plan": "default", "retries": "2"})
    assert not out.ok
    assert team.n["backend"] == 3 and "frontend" not in team.n
    assert [r.agent_type for r in team.of("git")[0].inputs] == ["architect", "designer"]
    subs = {s["agent_type"]: s for s in json.loads(out.data["subtasks"])}
    assert subs["frontend"]["state"] == "skipped" and "backend did not succeed" in subs["frontend"]["error"]
    assert subs["git"]["state"] == "succeeded"
    assert "backend (backend) failed: broken 3" in out.error and "frontend (frontend) skipped" in out.error
    assert out.output.startswith("3 of 5 sub-tasks succeeded")


def test_the_retry_budget_is_shared(tmp_path: Path) -> None:
    project = tmp_path / "mgr1"
    project.mkdir()
    team = Team(project)

    async def broken(sub: Delegation, n: int) -> TaskResult:
        return TaskResult("x", TaskState.FAILED, error="no", agent_type=sub.agent_type)

    team.special["designer"] = team.special["backend"] = broken
    out, _, _ = run_manager(tmp_path, None, team, {"plan": "default", "retries": "3", "retry_budget": "1"})
    assert team.n["designer"] + team.n["backend"] == 3  # one retry in all
    assert not out.ok and out.data["retries"] == "1"
