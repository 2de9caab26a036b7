"""workflow: runs a workflow definition, every turn a sub-task routed by the mesh.

``/workflow run review "a function that parses ISO dates"`` submits a task of this type with
option ``workflow=review``; the daemon puts the definition it loaded (orchgpt/workflows.py) in
option ``workflow_def`` (orchgpt/workflow_runs.py). This agent reads no file.

- ``sequential``: each participant in order, given the task and the previous outputs;
- ``autonomous``: every participant at once on the task; the results are gathered;
- ``groupchat``: turns in one conversation; the next speaker by ``round_robin``, ``auto`` (an
  ``assistant`` sub-task picks from the participants' descriptions) or ``manual`` (the user
  picks, through a ``user_proxy`` sub-task); it ends on the termination phrase, at
  ``max_rounds``, or when the user says ``exit``.

Every turn, speaker choice, question to the user and summary is a DELEGATE_TASK with a stable
key (``turn-N``, ``select-N``, ``end-N``, ``summary``), so its id derives from this task's id
(orchgpt.models.child_task_id): after a crash of the daemon this task runs again, and each
delegation it made before is answered at once by the sub-task that exists (its result, or the
running one), so that no turn runs twice and the run goes on from the turn it was on. The
sub-tasks' events stream under this task; STEP events name the speaker of each turn (data
``speaker``, ``turn``, ``turn_task``). Cancelling this task cancels its sub-tasks. Sequential and
group-chat turns work in this task's workspace (option ``workspace``), on the same files, which
become this task's artifacts too; autonomous turns work each in their own.

The result: the output by ``summary_method`` (``last``, ``llm``: an ``assistant`` sub-task on the
fast model, ``none``), and in its data the ``transcript`` (JSON, stored by the daemon as the
session's messages), the ``summary`` and ``usage_summary`` (JSON: ``{start_time, end_time,
total: {total_cost, <model>: {cost, prompt_tokens, completion_tokens, total_tokens}}, agents:
{<speaker>: {...}}}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from pydantic import ValidationError

from orchgpt.models import Action, Delegation, TaskResult, TaskState, child_task_id
from orchgpt.workflows import DEF_OPTION, Participant, Workflow

from ..errors import AgentdError, TaskFailed
from ..runtime import Agent, Outcome, TaskContext, register
from ..workspace import WORKSPACE_OPTION
from . import _workflow_text as tx
from ._workflow_text import Entry, Tally


def _now_ms() -> int:
    return int(time.time() * 1000)


class Run:
    """One run of a workflow: its conversation, usage and stop reason."""

    def __init__(self, ctx: TaskContext, wf: Workflow, task: str) -> None:
        self.ctx = ctx
        self.wf = wf
        self.task = task
        self.entries: list[Entry] = []
        self.tally = Tally()
        self.stop_reason = ""

    # ---------------------------------------------------------------- sub-tasks
    async def delegate(
        self,
        key: str,
        p: Participant | None,
        agent_type: str,
        text: str,
        options: dict[str, str],
        label: str,
    ) -> TaskResult:
        sub = Delegation(
            agent_type,
            text,
            language=self.ctx.task.language or "python",
            action=Action.RUN,
            options=options,
            key=key,
        )
        try:
            r = await asyncio.wait_for(self.ctx.delegate(sub), self.wf.turn_timeout)
        except TimeoutError:
            raise TaskFailed(f"{label}: no result after {self.wf.turn_timeout:g}s") from None
        except AgentdError as exc:
            raise TaskFailed(f"{label}: not delegated: {exc}") from None
        self.tally.add(p.name if p is not None else label.split(" ")[0], r.usage)
        if r.state == TaskState.CANCELLED:
            raise asyncio.CancelledError(f"{label} was cancelled")
        if not r.ok:
            raise TaskFailed(f"{label} ({agent_type}) {r.state}: {r.error or 'no reason given'}")
        return r

    async def turn(self, n: int, p: Participant, text: str, role: str = "assistant") -> Entry:
        key = f"turn-{n}"
        options = dict(p.options)
        if p.system_prompt:
            options["system_prompt"] = p.system_prompt
        if p.is_user:
            options["question"] = text
        elif self.wf.type != "autonomous":  # one after another: they work on the same files
            options.setdefault(WORKSPACE_OPTION, Path(self.ctx.workspace).name)
        sub_id = child_task_id(self.ctx.task.task_id, key)
        self.ctx.step(
            f"turn {n}: {p.name} ({p.type})",
            speaker=p.name,
            turn=str(n),
            turn_task=sub_id,
            agent_type=p.type,
        )
        r = await self.delegate(key, p, p.type, text, options, f"turn {n} ({p.name})")
        if options.get(WORKSPACE_OPTION) == Path(self.ctx.workspace).name:
            for a in r.artifacts:  # files of the shared workspace: the workflow's too (/fetch)
                with contextlib.suppress(OSError, ValueError):
                    self.ctx.artifact(a.path, kind=a.kind)
        e = Entry(
            p.name,
            r.output,
            "user" if p.is_user else role,
            p.type,
            r.task_id or sub_id,
            n,
            _now_ms(),
        )
        if r.output.strip() or not p.is_user:  # the user passing says nothing
            self.entries.append(e)
        self.ctx.step(
            f"{p.name}: {tx.short(r.output)}",
            speaker=p.name,
            turn=str(n),
            turn_task=e.task_id,
            state="done",
        )
        return e

    # ---------------------------------------------------------------- the three types
    async def sequential(self) -> None:
        for n, p in enumerate(self.active(), 1):
            text = tx.user_question(self.entries) if p.is_user else tx.sequential_prompt(self.task, p, self.entries)
            e = await self.turn(n, p, text)
            if p.is_user and e.content.strip().lower() == "exit":
                self.stop_reason = "the user ended it"
                return
        self.stop_reason = "every agent took its turn"

    async def autonomous(self) -> None:
        ps = self.active()
        results = await asyncio.gather(
            *(
                self.turn(
                    n,
                    p,
                    tx.user_question([Entry("task", self.task, "user")])
                    if p.is_user
                    else tx.autonomous_prompt(self.task, p),
                )
                for n, p in enumerate(ps, 1)
            )
        )
        self.entries.sort(key=lambda e: e.turn)  # in the participants' order, whoever finished first
        self.stop_reason = f"{len(results)} results gathered"

    async def groupchat(self) -> None:
        wf = self.wf
        limit = wf.max_rounds
        n = 0
        prev: Participant | None = None
        while True:
            while n < limit:
                p = await self.select(n + 1, prev)
                text = (
                    tx.user_question(self.entries)
                    if p.is_user
                    else tx.chat_prompt(wf, self.task, p, self.entries, n + 1)
                )
                e = await self.turn(n + 1, p, text)
                n, prev = n + 1, p
                if p.is_user and e.content.strip().lower() == "exit":
                    self.stop_reason = "the user ended it"
                    return
                if not p.is_user and wf.may_end(p) and tx.terminated(e.content, wf.termination):
                    self.stop_reason = f"{p.name} said {wf.termination}"
                    break
            else:
                self.stop_reason = f"max_rounds ({wf.max_rounds}) reached"
            proxy = next((p for p in wf.participants if p.is_user and wf.human_mode(p) == "terminate"), None)
            if proxy is None:
                return
            # human_input_mode "terminate": the user may go on when the chat would end
            e = await self.turn(n + 1, proxy, tx.user_question(self.entries, ending=self.stop_reason))
            n, prev = n + 1, proxy
            if not e.content.strip() or e.content.strip().lower() == "exit":
                return
            limit = n + wf.max_rounds
            self.stop_reason = ""

    # ---------------------------------------------------------------- speakers
    def active(self) -> list[Participant]:
        """The participants who take turns (a user_proxy whose mode is not "always" does not)."""
        return [p for p in self.wf.participants if not p.is_user or self.wf.human_mode(p) == "always"]

    async def select(self, n: int, prev: Participant | None) -> Participant:
        ps = self.active()
        if prev is None or self.wf.speaker_selection == "round_robin":
            if prev is None:
                return ps[0]
            i = next((k for k, p in enumerate(ps) if p.name == prev.name), -1)
            return ps[(i + 1) % len(ps)]
        key = f"select-{n}"
        if self.wf.speaker_selection == "manual":
            q = f"{tx.user_question(self.entries).split(chr(10) + chr(10))[0]}\n\nWho speaks next?"
            r = await self.delegate(
                key,
                None,
                "user_proxy",
                q,
                {"question": q, "choices": ",".join(p.name for p in ps)},
                "speaker_selection (manual)",
            )
        else:
            r = await self.delegate(
                key,
                None,
                "assistant",
                tx.select_prompt(self.wf, ps, self.entries, self.task),
                {"system_prompt": tx.SELECT_SYSTEM, "model": "fast"},
                "speaker_selection (auto)",
            )
        p = tx.pick_speaker(r.output, ps)
        if p is None:
            i = next((k for k, x in enumerate(ps) if x.name == prev.name), -1)
            p = ps[(i + 1) % len(ps)]
            self.ctx.log(
                f"turn {n}: the selector answered {tx.short(r.output, 80)!r}, not a participant; "
                f"{p.name} speaks (round robin)"
            )
        self.ctx.step(
            f"turn {n}: {p.name} chosen ({self.wf.speaker_selection})",
            selection=self.wf.speaker_selection,
            speaker=p.name,
            turn=str(n),
        )
        return p

    # ---------------------------------------------------------------- result
    async def summarise(self) -> str:
        said = [e for e in self.entries if e.role != "user"]
        if self.wf.summary_method == "none":
            return ""
        if self.wf.summary_method == "last" or not said:
            return tx.strip_phrase(said[-1].content, self.wf.termination) if said else ""
        prompt = f"Task: {self.task}\n\nThe conversation:\n\n{tx.conversation(self.entries)}\n\nSummarise the outcome."
        r = await self.delegate(
            "summary",
            None,
            "assistant",
            prompt,
            {"system_prompt": self.wf.summary_prompt or tx.SUMMARY_SYSTEM, "model": "fast"},
            "summary (llm)",
        )
        return r.output


@register
class WorkflowAgent(Agent):
    type = "workflow"
    capabilities = ("workflow", "delegate")
    description = "runs a workflow (sequential, autonomous, group chat) of agents over the mesh"
    needs_model = False

    async def run(self, ctx: TaskContext) -> Outcome:
        raw = ctx.task.options.get(DEF_OPTION, "")
        if not raw:
            raise TaskFailed('no workflow definition in the task: run one with /workflow run NAME "task"')
        try:
            wf = Workflow.from_json(raw)
        except (ValueError, ValidationError) as exc:
            raise TaskFailed(f"the workflow definition is not valid: {exc}") from None
        task = ctx.task.input.strip()
        if not task:
            raise TaskFailed(f'give workflow {wf.name} a task: /workflow run {wf.name} "task"')
        started = _now_ms()
        ctx.step(
            f"workflow {wf.name} ({wf.type}): " + ", ".join(p.name for p in wf.participants),
            workflow=wf.name,
            type=wf.type,
        )
        run = Run(ctx, wf, task)
        failed = ""
        summary = ""
        try:
            await {
                "sequential": run.sequential,
                "autonomous": run.autonomous,
                "groupchat": run.groupchat,
            }[wf.type]()
            summary = await run.summarise()
        except TaskFailed as exc:  # a turn failed: the result keeps the turns taken so far
            failed = str(exc)
            run.stop_reason = f"failed: {failed}"
        finished = _now_ms()
        usage = run.tally.summary(started, finished)
        turns = len(run.entries)
        output = summary or f"workflow {wf.name}: {turns} turns ({run.stop_reason}); no summary"
        ctx.step(
            f"workflow {wf.name} {'failed' if failed else 'finished'}: {turns} turns, {run.stop_reason}; "
            f"${usage['total']['total_cost']:.4f}",
            usage=json.dumps(usage),
            stop_reason=run.stop_reason,
        )
        return Outcome(
            output=output,
            ok=not failed,
            error=failed,
            data={
                "workflow": wf.name,
                "type": wf.type,
                "turns": str(turns),
                "stop_reason": run.stop_reason,
                "summary_method": wf.summary_method,
                "summary": summary,
                "transcript": json.dumps([e.as_dict() for e in run.entries]),
                "usage_summary": json.dumps(usage),
                "start_time": usage["start_time"],
                "end_time": usage["end_time"],
            },
        )
