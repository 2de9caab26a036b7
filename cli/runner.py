"""Follow a task from submission to its result, through daemon restarts.

Every command is submitted with a task id chosen here (`Command.task_id`, the
orchestrator's idempotency key): when the connection drops before the task is
acknowledged the same command is submitted again and cannot run twice; once it
is acknowledged the runner follows it with `watch(task_id, after_seq)` from
the last event it printed, so nothing is shown twice or lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchgpt import tracing
from orchgpt.models import ApprovalEvent, ResultEvent

from .approvals import stops_task
from .connect import classify, code_of, is_retryable
from .errors import ConnectionProblem
from .render import EventRenderer, TaskLabel, short_id

if TYPE_CHECKING:
    from orchgpt.models import ApprovalRequest, Command, TaskEvent, TaskResult

    from .context import Context

BACKOFF = (0.2, 0.5, 1.0, 2.0, 3.0)


def backoff(attempt: int) -> float:
    return BACKOFF[min(attempt, len(BACKOFF) - 1)]


@dataclass
class TaskView:
    """A task this CLI run follows."""

    task_id: str
    agent_type: str
    action: str = "run"
    input: str = ""
    renderer: EventRenderer | None = None
    state: str = "queued"
    last_seq: int = 0
    accepted: bool = False
    result: TaskResult | None = None
    error: str = ""  # why the CLI stopped following it (connection lost)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    children: dict[str, TaskView] = field(default_factory=dict)
    root: str = ""  # a sub-task's: the id of the task the user started

    @property
    def short(self) -> str:
        return short_id(self.task_id)

    @property
    def label(self) -> str:
        return f"{self.agent_type} {self.short}"

    @property
    def ok(self) -> bool:
        return self.result is not None and str(self.result.state) == "succeeded"


def new_view(ctx: Context, task_id: str, agent_type: str, action: str = "run", input: str = "") -> TaskView:
    view = TaskView(task_id, agent_type, action, input)
    view.renderer = EventRenderer(TaskLabel(task_id, agent_type), fancy=ctx.fancy, prefix_output=ctx.interactive)
    ctx.views[task_id] = view
    return view


def agent_type_of(ev: TaskEvent) -> str:
    """A sub-task's agent type: orchgpt stamps it on every event (TaskEvent.agent_type)."""
    if ev.agent_type:
        return ev.agent_type
    if isinstance(ev, ResultEvent) and ev.result is not None:
        return ev.result.agent_type
    return ""


def child_view(ctx: Context, parent: TaskView, ev: TaskEvent) -> TaskView:
    """The view of a sub-task whose events arrive on its parent's stream."""
    child = parent.children.get(ev.task_id)
    kind = ctx.speakers.get(ev.task_id) or agent_type_of(ev)  # a workflow's turn: its speaker
    if child is None:
        child = TaskView(ev.task_id, kind or "sub-task", accepted=True, root=parent.root or parent.task_id)
        child.renderer = EventRenderer(TaskLabel(ev.task_id, child.agent_type), fancy=ctx.fancy)
        parent.children[ev.task_id] = child
    elif kind and child.agent_type == "sub-task" and child.renderer is not None:
        child.agent_type = child.renderer.label.agent_type = kind
    return child


async def run_command(ctx: Context, cmd: Command, on_view: Callable[[TaskView], object] | None = None) -> TaskView:
    """Submit a parsed command and follow it to its result (`on_view` sees the view first)."""
    from orchgpt.models import new_id

    command = cmd.for_session(ctx.session_id, approval=ctx.approve_all)
    command.task_id = command.task_id or new_id()
    view = new_view(ctx, command.task_id, command.agent_type, str(command.action), command.input)
    if on_view is not None:
        on_view(view)
    name = f"autogpt {command.agent_type} {command.action}"
    attrs = {"orchgpt.task.id": command.task_id, "orchgpt.agent.type": command.agent_type}
    with tracing.span(name, None, "CLIENT", **attrs) as span:  # one trace per command
        await follow(ctx, view, command)
        if span is not None:
            span.set_attribute("orchgpt.task.state", view.state)
    return view


async def follow(ctx: Context, view: TaskView, command: Command | None = None) -> TaskView:
    """Stream the task's events to ctx.out until its RESULT; reconnects on the way."""
    attempt = 0
    lost_at: float | None = None
    try:
        while not view.done.is_set():
            try:
                client = await ctx.client()
                if command is not None and not view.accepted:
                    stream = client.submit(command)
                else:
                    stream = client.watch(view.task_id, after_seq=view.last_seq)
                async for ev in stream:
                    if lost_at is not None:
                        lost_at = None
                    attempt = 0
                    ctx.set_connected(True)
                    handle(ctx, view, ev)
                    if view.done.is_set():
                        break
                if not view.done.is_set():
                    await catch_up(ctx, view)
                    if not view.done.is_set():  # the stream ended early: follow again
                        await asyncio.sleep(backoff(attempt))
                        attempt += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_retryable(exc) or (command is not None and not view.accepted):
                    raise classify(exc) from None
                ctx.set_connected(False, str(exc))
                now = time.monotonic()
                lost_at = lost_at or now
                if ctx.reconnect_timeout is not None and now - lost_at > ctx.reconnect_timeout:
                    raise ConnectionProblem(
                        f"lost the orchestrator at {ctx.address} while following task {view.short} "
                        f"({code_of(exc)}); gave up after {ctx.reconnect_timeout:g}s: {exc}"
                    ) from None
                await asyncio.sleep(backoff(attempt))
                attempt += 1
    except BaseException as exc:
        view.error = view.error or str(exc) or type(exc).__name__
        raise
    finally:
        for v in [*view.children.values(), view]:
            if v.renderer is not None:
                ctx.out.flush_task(v.renderer)
        view.done.set()
    return view


def handle(ctx: Context, view: TaskView, ev: TaskEvent) -> None:
    """Print one event (once) and track the task's state."""
    if not view.accepted:
        view.accepted = True
        if ev.task_id and ev.task_id != view.task_id:  # the orchestrator chose the id
            ctx.views.pop(view.task_id, None)
            view.task_id = ev.task_id
            ctx.views[view.task_id] = view
            if view.renderer is not None:
                view.renderer.label.task_id = ev.task_id
    if ev.task_id and ev.task_id != view.task_id:
        handle(ctx, child_view(ctx, view, ev), ev)  # a sub-task (delegated by the agent)
        return
    if ev.seq and ev.seq <= view.last_seq:
        return  # replayed after a reconnect
    if ev.data.get("turn_task") and ev.data.get("speaker"):  # a workflow names the turn's speaker
        ctx.speakers[ev.data["turn_task"]] = ev.data["speaker"]
    view.last_seq = max(view.last_seq, ev.seq)
    if ev.state is not None:
        view.state = str(ev.state)
    assert view.renderer is not None
    ctx.out.event(view.renderer, ev)
    if isinstance(ev, ApprovalEvent) and ev.approval is not None:
        asyncio.get_running_loop().create_task(answer(ctx, view, ev.approval))
    elif isinstance(ev, ResultEvent):
        view.result = ev.result
        if ev.result is not None:
            view.state = str(ev.result.state)
        view.done.set()


async def catch_up(ctx: Context, view: TaskView) -> None:
    """After a stream ended without a RESULT: print stored events and the result, if any."""
    task, events, _children = await ctx.call(lambda c: c.get_task(view.task_id, with_events=True))
    for ev in events:
        handle(ctx, view, ev)
        if view.done.is_set():
            return
    if task.state.terminal and task.result is not None:
        handle(
            ctx,
            view,
            ResultEvent(task_id=view.task_id, seq=0, state=task.state, result=task.result, agent_type=task.agent_type),
        )


async def answer(ctx: Context, view: TaskView, req: ApprovalRequest) -> None:
    """Ask ctx.approver about a proposed tool call and send the answer."""
    from orchgpt.models import ApprovalDecision, ApprovalResponse

    try:
        response: ApprovalResponse | None = None
        root = view.root or view.task_id
        left = ctx.continuous.get(root, 0)
        if left > 0 and not req.question:  # a "y -N" given for this task or its parent covers the call
            ctx.continuous[root] = left - 1
            ctx.out.info(f"task {view.short} runs {req.tool}: approved (y -N, {left - 1} more)")
            response = ApprovalResponse(req.request_id, ApprovalDecision.APPROVE)
        elif ctx.approver is not None:
            response = await ctx.approver(view, req)
            if view.done.is_set():
                return  # the task ended while the user was thinking
            if response is not None and response.decision == ApprovalDecision.APPROVE_NEXT:
                # The CLI keeps the count, so that it covers the calls of the sub-tasks too: each
                # call is approved on its own, from the budget of the whole task tree.
                ctx.continuous[root] = max(response.count, 1) - 1
                response = ApprovalResponse(req.request_id, ApprovalDecision.APPROVE)
        if response is None:
            response = ApprovalResponse(
                req.request_id, ApprovalDecision.REJECT, feedback="rejected: nobody can approve this call"
            )
        await ctx.call(lambda c: c.approve(view.task_id, response))
        if stops_task(response):  # seed 003's "n": "exit program", here the task
            await ctx.call(lambda c: c.cancel(view.task_id, "stopped by the user at an approval (n)"))
    except Exception as exc:
        ctx.out.error(f"could not answer the approval request of task {view.short}: {classify(exc)}")
