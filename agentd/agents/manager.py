"""manager: splits a project into sub-tasks and delegates them across the mesh.

``/manager create "todo app with a fastapi backend and a web frontend" | python``

1. Plan: the model answers with sub-tasks (agent type, what to do, which other
   sub-tasks it depends on). The plan is validated (known types, ids, existing
   dependencies, no cycle); an unusable plan goes back to the model once with
   the problems, then the manager falls back to the default plan
   architect -> (designer || backend) -> frontend -> git and says so in an event.
   A git sub-task always waits for every other one.
2. Run: every sub-task is delegated (DELEGATE_TASK) as soon as its
   dependencies have succeeded, with their results as its inputs, so that
   independent sub-tasks run in parallel; orchgpt routes each to an agent of
   its type, local or remote. They work in the manager's project directory
   (option ``workspace``); a sub-task that may run alongside another one works
   in a copy of it (``<project>.<sub-task id>``), so that neither sees the
   other's half-written files nor counts them as its own output, and its
   artifacts are copied back into the project when it succeeds. A failed sub-task is retried, within a
   budget; a sub-task whose dependency failed is skipped (git still commits
   what succeeded).
3. Report: REPORT.md in the project (and committed when the project is a git
   repository), a summary as the output, and the details in the result's data:
   every sub-task with its agent, state, attempts, the mesh's requeues, its
   artifacts, its checks, its token usage and cost, its start and end times.

Options: ``retries`` (per sub-task, default 1), ``retry_budget`` (retries in
all, default: one per sub-task), ``subtask_timeout`` (seconds, default 1800),
``plan_tries`` (default 2), ``plan`` (``default`` to skip the model's plan),
``types`` (extra agent types, served by remote agents, the planner may use).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from orchgpt import logs
from orchgpt.models import Action, Delegation, TaskResult, TaskState, now_ms

from ..errors import AgentdError, TaskFailed
from ..runtime import Outcome, TaskContext, register
from . import _team
from ._llm_agent import LLMAgent
from ._team import adopt_or_fetch, fork, keep, project_dir, project_option, short
from ._team_plan import (
    MAX_TASKS,
    TEAM,
    PlanItem,
    default_plan,
    find_cycle,
    normalise,
    parse_plan,
    topological,
)
from ._team_report import Attempt, TeamReport, Track

log = logs.get("agentd.manager")


SYSTEM = """You are the manager of a team of software agents. Split the user's project into \
sub-tasks, each for one of these agent types:

{types}

Answer with one JSON object and nothing else:
{{"tasks": [{{"id": "arch", "agent": "architect", "task": "what this agent must do", "depends_on": []}}, ...]}}

Rules:
- ids are short and unique; depends_on lists the ids of the sub-tasks whose results this one needs;
- the architect's design feeds the backend and the frontend, the backend's API feeds the frontend;
- sub-tasks that do not depend on each other run in parallel;
- finish with one git sub-task that commits everyone's work;
- at most {max_tasks} sub-tasks; the implementation language is {language}."""


def concurrent(items: list[PlanItem]) -> set[str]:
    """Ids of the sub-tasks that may run at the same time as another (neither depends on the other)."""
    deps = {i.id: set(i.depends_on) for i in items}
    anc: dict[str, set[str]] = {}

    def ancestors(n: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if n not in anc:
            out: set[str] = set()
            for d in deps.get(n, ()):
                if d not in seen:
                    out |= {d} | ancestors(d, seen | {n})
            anc[n] = out
        return anc[n]

    ids = [i.id for i in items]
    return {a for a in ids for b in ids if a != b and b not in ancestors(a) and a not in ancestors(b)}


@register
class ManagerAgent(LLMAgent, TeamReport):
    type = "manager"
    capabilities = ("plan", "delegate", "report")
    description = "splits a project into sub-tasks, delegates them to the team and reports on the result"

    async def run(self, ctx: TaskContext) -> Outcome:
        started = now_ms()
        opts = ctx.task.options
        idea = ctx.task.input.strip()
        if not idea:
            raise TaskFailed('tell the manager what to build, e.g. /manager create "todo app with a web frontend"')
        root = project_dir(ctx)
        allowed = set(TEAM) | {t.strip() for t in opts.get("types", "").split(",") if t.strip()}
        allowed.discard("manager")
        items, source, why = await self._plan(ctx, idea, allowed)
        notes = normalise(items)
        if find_cycle(items):  # the model's own dependencies and git's made a cycle
            why = f"the plan's dependencies form a cycle once git waits for every sub-task ({notes})"
            items, source, notes = default_plan(idea), "default", []
        for n in notes:
            ctx.log(f"plan adjusted: {n}")
        plan_text = ", ".join(
            f"{i.id} ({i.agent_type}{' after ' + '+'.join(i.depends_on) if i.depends_on else ''})" for i in items
        )
        ctx.step(f"plan ({source}): {plan_text}", plan=json.dumps([i.as_dict() for i in items]), source=source)
        tracks = {i.id: Track(i) for i in topological(items)}
        parallel = concurrent(items)
        retries = max(0, int(opts.get("retries", "1") or 1))
        budget = [max(0, int(opts.get("retry_budget", str(len(items))) or len(items)))]
        timeout = float(opts.get("subtask_timeout", "1800") or 1800)
        await asyncio.gather(
            *(
                self._drive(ctx, tracks, t, idea, retries, budget, timeout, root, t.item.id in parallel)
                for t in tracks.values()
            )
        )
        finished = now_ms()
        return await self._report(ctx, idea, tracks, source, why, started, finished, root)

    # ---------------------------------------------------------------- plan
    async def _plan(self, ctx: TaskContext, idea: str, allowed: set[str]) -> tuple[list[PlanItem], str, str]:
        """(items, "model" | "default", why the default was used)."""
        if ctx.task.options.get("plan", "").lower() == "default":
            return default_plan(idea), "default", "the task asked for the default plan"
        tries = max(1, int(ctx.task.options.get("plan_tries", "2") or 2))
        ctx.status("planning")
        types = "\n".join(f"- {t}: {TEAM.get(t, 'an agent type of this mesh')}" for t in sorted(allowed))
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": SYSTEM.format(types=types, max_tasks=MAX_TASKS, language=ctx.task.language or "python"),
            },
            {"role": "user", "content": f"The project: {idea}"},
        ]
        problems: list[str] = []
        try:
            async with self.session(ctx, tools=()) as s:
                for n in range(1, tries + 1):
                    res = await s.llm.chat(messages, on_token=ctx.token)
                    ctx.add_usage(res.usage)
                    items, problems = parse_plan(res.content, allowed)
                    if not problems:
                        return items, "model", ""
                    ctx.step(
                        f"the model's plan is unusable (try {n} of {tries}): " + "; ".join(problems)[:400],
                        check="plan",
                        ok="false",
                    )
                    messages += [
                        {"role": "assistant", "content": res.content},
                        {
                            "role": "user",
                            "content": "This plan cannot be used:\n- "
                            + "\n- ".join(problems)
                            + "\nAnswer with the corrected JSON plan only.",
                        },
                    ]
        except (AgentdError, OSError) as exc:
            problems = [f"no plan from the model: {exc}"]
        why = "; ".join(problems)
        ctx.log(f"using the default plan (architect -> designer + backend -> frontend -> git): {why}")
        return default_plan(idea), "default", why

    # ---------------------------------------------------------------- run
    async def _drive(
        self,
        ctx: TaskContext,
        tracks: dict[str, Track],
        t: Track,
        idea: str,
        retries: int,
        budget: list[int],
        timeout: float,
        root: Path,
        alongside: bool,
    ) -> None:
        try:
            for d in t.item.depends_on:
                await tracks[d].done.wait()
            deps = [tracks[d] for d in t.item.depends_on]
            failed = [d.item.id for d in deps if d.state != "succeeded"]
            if failed and t.item.agent_type not in ("git", "mailer"):
                t.state, t.note = "skipped", f"skipped: {', '.join(failed)} did not succeed"
                ctx.step(f"{t.item.id} ({t.item.agent_type}): {t.note}", subtask=t.item.id, state="skipped")
                return
            ups = [tracks[i] for i in _team.upstream(t.item.depends_on, lambda i: tracks[i].item.depends_on)]
            inputs = [d.result for d in ups if d.result is not None and d.state == "succeeded"]
            if t.item.agent_type in ("git", "mailer"):
                # everything that succeeded, in the order it finished (= the order its files landed in
                # the project), for one commit per sub-task
                done = sorted(
                    (
                        x
                        for x in tracks.values()
                        if x.item.id in t.item.depends_on and x.result is not None and x.state == "succeeded"
                    ),
                    key=lambda x: x.finished_ms,
                )
                inputs = [x.result for x in done if x.result is not None]
            t.state, t.started_ms = "running", now_ms()
            text = t.item.input if idea.lower() in t.item.input.lower() else f"{t.item.input}\n\nThe project: {idea}"
            for n in range(1, retries + 2):
                a = Attempt(n, started_ms=now_ms())
                t.attempts.append(a)
                ctx.step(
                    f"{t.item.id}: delegating to {t.item.agent_type} (attempt {n})",
                    subtask=t.item.id,
                    agent_type=t.item.agent_type,
                    attempt=str(n),
                )
                where = project_option(ctx)
                if alongside:
                    name = f"{root.name}.{t.item.id}" + (f".{n}" if n > 1 else "")
                    try:
                        fork(root, name)
                        where = {"workspace": name}
                    except (OSError, shutil.Error) as exc:
                        ctx.log(f"{t.item.id}: could not copy the project for it ({exc}); it works in the project")
                sub = Delegation(
                    t.item.agent_type,
                    text,
                    language=ctx.task.language or "python",
                    action=Action.CREATE,
                    options={**t.item.options, **where},
                    inputs=list(inputs),
                    key=f"{t.item.id}#{n}",
                )  # a re-run after a crash finds this sub-task
                result = await self._delegate(ctx, sub, timeout)
                a.finished_ms = now_ms()
                a.task_id, a.agent_id, a.state = result.task_id, result.agent_id, str(result.state)
                a.mesh_attempt = int(result.data.get("attempt", "1") or 1)
                a.requeued = result.data.get("requeued", "")
                t.result = result
                t.spent.add(result.usage)
                if a.requeued:
                    ctx.log(
                        f"{t.item.id}: the mesh requeued {result.task_id} ({a.requeued}); it finished on "
                        f"{result.agent_id or '?'} at attempt {a.mesh_attempt}"
                    )
                if result.ok:
                    t.state = "succeeded"
                    try:
                        t.adopted = await adopt_or_fetch(ctx, result, root)
                        keep(result, root)
                    except OSError as exc:
                        ctx.log(f"{t.item.id}: could not copy its files into the project: {exc}")
                    ctx.step(
                        f"{t.item.id} ({t.item.agent_type}) succeeded on {result.agent_id}: "
                        f"{short(result.output, 120)}",
                        subtask=t.item.id,
                        state="succeeded",
                        task=result.task_id,
                        agent=result.agent_id,
                        files=str(len(result.artifacts)),
                    )
                    break
                a.error = result.error or str(result.state)
                t.state = "failed"
                if n > retries or budget[0] <= 0 or result.state == TaskState.CANCELLED:
                    why = "no retries left" if n > retries or budget[0] <= 0 else "cancelled"
                    ctx.step(
                        f"{t.item.id} ({t.item.agent_type}) failed ({why}): {short(a.error, 200)}",
                        subtask=t.item.id,
                        state="failed",
                        task=result.task_id,
                    )
                    break
                budget[0] -= 1
                ctx.step(
                    f"{t.item.id} ({t.item.agent_type}) failed: {short(a.error, 200)}; retrying",
                    subtask=t.item.id,
                    state="retrying",
                    task=result.task_id,
                )
                text = (
                    f"{t.item.input}\n\nThe project: {idea}\n\nAn earlier attempt at this failed: "
                    f"{short(a.error, 1000)}\nDo it again and avoid that problem."
                )
        finally:
            if not t.finished_ms:
                t.finished_ms = now_ms()
            t.done.set()

    async def _delegate(self, ctx: TaskContext, sub: Delegation, timeout: float) -> TaskResult:
        try:
            return await asyncio.wait_for(ctx.delegate(sub), timeout)
        except TimeoutError:
            return TaskResult(
                "",
                TaskState.FAILED,
                agent_type=sub.agent_type,
                error=f"no result from the {sub.agent_type} sub-task after {timeout:g}s",
            )
        except AgentdError as exc:
            return TaskResult("", TaskState.FAILED, agent_type=sub.agent_type, error=f"not delegated: {exc}")

    # ---------------------------------------------------------------- report
