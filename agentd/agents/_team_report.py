"""The manager's report: each sub-task's track (its attempts, agent, checks, usage, times) and
REPORT.md, written into the project and committed when it is a git repository (TeamReport, mixed
into ManagerAgent)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchgpt.checks import checks_of as parse_checks
from orchgpt.checks import markdown_table
from orchgpt.models import TaskResult, Usage

from ..errors import AgentdError
from ..runtime import Outcome, TaskContext
from ._team import checks_of, short
from ._team_plan import (
    PlanItem,
)

REPORT = "REPORT.md"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ms else ""


@dataclass
class Attempt:
    n: int
    task_id: str = ""
    agent_id: str = ""
    state: str = ""
    error: str = ""
    started_ms: int = 0
    finished_ms: int = 0
    mesh_attempt: int = 1  # times the mesh dispatched it (> 1: requeued after an agent was lost)
    requeued: str = ""


@dataclass
class Track:
    item: PlanItem
    state: str = "waiting"  # waiting | running | succeeded | failed | skipped
    attempts: list[Attempt] = field(default_factory=list)
    result: TaskResult | None = None
    started_ms: int = 0
    finished_ms: int = 0
    note: str = ""
    adopted: list[str] = field(default_factory=list)
    spent: Usage = field(default_factory=Usage)  # over every attempt
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def usage(self) -> Usage:
        return self.spent

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "id": self.item.id,
            "agent_type": self.item.agent_type,
            "depends_on": self.item.depends_on,
            "state": self.state,
            "task_id": r.task_id if r else "",
            "agent_id": r.agent_id if r else "",
            "attempts": len(self.attempts),
            "mesh_attempts": [a.mesh_attempt for a in self.attempts],
            "requeued": [a.requeued for a in self.attempts if a.requeued],
            "retried_after": [a.error for a in self.attempts[:-1]],
            "output": short(r.output, 300) if r else "",
            "error": (r.error if r and not r.ok else "") or (self.note if self.state != "succeeded" else ""),
            "checks": checks_of(r) if r else "",
            "artifacts": [{"path": a.path, "size": a.size, "sha256": a.sha256} for a in (r.artifacts if r else [])],
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cost_usd": round(self.usage.cost_usd, 6),
            "model": self.usage.model,
            "started": _iso(self.started_ms),
            "finished": _iso(self.finished_ms),
            "duration_s": round((self.finished_ms - self.started_ms) / 1000, 3) if self.started_ms else 0,
        }


class TeamReport:
    """REPORT.md and the result's summary of a manager's run (part of ManagerAgent)."""

    async def _report(
        self,
        ctx: TaskContext,
        idea: str,
        tracks: dict[str, Track],
        source: str,
        why: str,
        started: int,
        finished: int,
        root: Path,
    ) -> Outcome:
        ts = list(tracks.values())
        ok = [t for t in ts if t.state == "succeeded"]
        total = Usage(model=ctx.usage.model).add(ctx.usage)
        per_type: dict[str, Usage] = {"manager": Usage().add(ctx.usage)}
        for t in ts:
            total.add(t.usage)
            per_type.setdefault(t.item.agent_type, Usage()).add(t.usage)
        retried = sum(len(t.attempts) - 1 for t in ts if t.attempts)
        requeues = [(t, a) for t in ts for a in t.attempts if a.requeued]
        md = self._markdown(ctx, idea, ts, source, why, started, finished, total, per_type, requeues)
        (root / REPORT).write_text(md, encoding="utf-8")
        committed = await self._commit_report(ctx, root)
        ctx.artifact(REPORT, kind="document")
        state_line = f"{len(ok)} of {len(ts)} sub-tasks succeeded"
        lines = [
            f"{state_line}; {total.total_tokens} tokens, ${total.cost_usd:.4f}; "
            f"{retried} retried, {len(requeues)} requeued by the mesh; report: {REPORT}"
        ]
        for t in ts:
            r = t.result
            where = f" on {r.agent_id}" if r and r.agent_id else ""
            detail = (
                short(r.output, 100) if t.state == "succeeded" and r else short(t.note or (r.error if r else ""), 100)
            )
            lines.append(
                f"- {t.item.id} ({t.item.agent_type}){where}: {t.state}"
                + (f" after {len(t.attempts)} attempts" if len(t.attempts) > 1 else "")
                + (
                    f"; requeued: {'; '.join(a.requeued for a in t.attempts if a.requeued)}"
                    if any(a.requeued for a in t.attempts)
                    else ""
                )
                + (f" — {detail}" if detail else "")
            )
        data = {
            "plan_source": source,
            "plan": json.dumps([t.item.as_dict() for t in ts]),
            "subtasks": json.dumps([t.summary() for t in ts]),
            "report": REPORT,
            "project": str(root),
            "prompt_tokens": str(total.prompt_tokens),
            "completion_tokens": str(total.completion_tokens),
            "cost_usd": f"{total.cost_usd:.6f}",
            "retries": str(retried),
            "requeues": str(len(requeues)),
            "started": _iso(started),
            "finished": _iso(finished),
            "checks": state_line,
            "report_committed": str(committed).lower(),
        }
        if why:
            data["plan_note"] = why
        failed = [t for t in ts if t.state != "succeeded"]
        if failed:
            err = "; ".join(
                f"{t.item.id} ({t.item.agent_type}) {t.state}: "
                f"{short(t.note or (t.result.error if t.result else ''), 200)}"
                for t in failed
            )
            return Outcome(ok=False, output="\n".join(lines), error=f"{state_line}: {err}", data=data)
        return Outcome(output="\n".join(lines), data=data)

    def _markdown(
        self,
        ctx: TaskContext,
        idea: str,
        ts: list[Track],
        source: str,
        why: str,
        started: int,
        finished: int,
        total: Usage,
        per_type: dict[str, Usage],
        requeues: list[tuple[Track, Attempt]],
    ) -> str:
        out = [f"# Project report: {idea}", ""]
        out += [
            f"- Manager task: `{ctx.task.task_id}` on `{ctx.agent_id}`",
            f"- Plan: {'from the model' if source == 'model' else 'the default plan (' + why + ')'}",
            f"- Started: {_iso(started)}",
            f"- Finished: {_iso(finished)} ({(finished - started) / 1000:.1f} s)",
            f"- Sub-tasks: {sum(1 for t in ts if t.state == 'succeeded')} of {len(ts)} succeeded",
            f"- Usage: {total.prompt_tokens} prompt + {total.completion_tokens} completion tokens, "
            f"${total.cost_usd:.4f} ({total.calls} model calls)",
            "",
        ]
        out += [
            "## Sub-tasks",
            "",
            "| Sub-task | Agent type | Agent | Task | State | Attempts | Checks | Tokens (prompt/completion) "
            "| Cost (USD) | Started | Finished |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in ts:
            r = t.result
            u = t.usage
            out.append(
                f"| {t.item.id} | {t.item.agent_type} | {r.agent_id if r else ''} | {r.task_id if r else ''} | "
                f"{t.state} | {len(t.attempts)} | {(checks_of(r) if r else '') or '-'} | "
                f"{u.prompt_tokens}/{u.completion_tokens} | {u.cost_usd:.4f} | {_iso(t.started_ms)} | "
                f"{_iso(t.finished_ms)} |"
            )
        out += [
            "",
            "## Usage per agent type",
            "",
            "| Agent type | Model calls | Prompt tokens | Completion tokens | Cost (USD) |",
            "|---|---|---|---|---|",
        ]
        for typ, u in per_type.items():
            out.append(f"| {typ} | {u.calls} | {u.prompt_tokens} | {u.completion_tokens} | {u.cost_usd:.4f} |")
        table = markdown_table((f"{t.item.id} ({t.item.agent_type})", parse_checks(t.result)) for t in ts if t.result)
        out += ["", "## Checks", "", *(table or ["- no sub-task reported checks"])]
        out += ["", "## Retries and requeues", ""]
        any_retry = False
        for t in ts:
            for a in t.attempts:
                if a.requeued:
                    any_retry = True
                    out.append(
                        f"- {t.item.id}: task `{a.task_id}` was requeued by the mesh ({a.requeued}) and "
                        f"finished on `{a.agent_id}` at attempt {a.mesh_attempt}"
                    )
            for a in t.attempts[:-1]:
                any_retry = True
                out.append(
                    f"- {t.item.id}: attempt {a.n} (`{a.task_id}` on `{a.agent_id}`) failed: "
                    f"{short(a.error, 300)}; retried"
                )
        if not any_retry:
            out.append("- none")
        for t in ts:
            r = t.result
            out += ["", f"## {t.item.id} ({t.item.agent_type}): {t.state}", "", f"Asked: {short(t.item.input, 400)}"]
            if t.item.depends_on:
                out.append(f"After: {', '.join(t.item.depends_on)}")
            if r is None:
                out.append(f"Not run: {t.note}")
                continue
            out.append(f"Result: {short(r.output if r.ok else (r.error or r.output), 600)}")
            checks = checks_of(r)
            if checks:
                out.append(f"Checks: {checks}")
            if r.artifacts:
                out += ["", "Artifacts:", ""]
                out += [f"- `{a.path}` ({a.size} bytes, sha256 {a.sha256[:12]})" for a in r.artifacts]
            if r.data.get("test_output") and r.data.get("tests_passed"):
                tail = r.data["test_output"].strip().splitlines()[-3:]
                out += ["", "Test output (end):", "", "```", *tail, "```"]
        return "\n".join(out) + "\n"

    async def _commit_report(self, ctx: TaskContext, root: Path) -> bool:
        """Commit REPORT.md when the project is a git repository on this host."""
        from ._team_git import Git

        git = Git(root)
        if not git.exists:
            return False
        try:
            await git.ensure()
            c = await git.commit(
                [REPORT],
                f"manager: project report\n\nTask: {ctx.task.task_id}\n",
                "orchgpt manager",
                "manager@orchgpt.local",
            )
        except (AgentdError, OSError) as exc:
            ctx.log(f"could not commit {REPORT}: {exc}")
            return False
        return c is not None
