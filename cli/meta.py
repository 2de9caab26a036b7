"""The meta commands. Each prints a record: a table or lines, or one JSON object."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchgpt.models import ResultEvent
from orchgpt.wire import dicts

from . import agents, graph_view, render
from .errors import CliError, ParseError
from .grammar import FORM, format_command
from .registry import meta, specs
from .render import Line, age, one_line, short_id, table, timestamp, usage_text

if TYPE_CHECKING:
    from orchgpt.models import SessionInfo, Task

    from .context import Context

SCAN_LIMIT = 500  # tasks searched to resolve a short id


# ---------------------------------------------------------------- id prefixes


async def resolve_task(ctx: Context, ref: str) -> str:
    """A full task id from an id or a unique prefix (as /tasks shows them)."""
    known = list(dict.fromkeys([*reversed(ctx.views), *ctx.recent_tasks]))
    if ref in known:
        return ref
    hits = [t for t in known if t.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits and len(ref) < 32:
        tasks = await ctx.call(lambda c: c.list_tasks(limit=SCAN_LIMIT, include_children=True))
        hits = [t.task_id for t in tasks if t.task_id.startswith(ref)]
        if ref in hits:
            return ref
    # a sub-task's derived id (models.child_task_id) starts with its parent's: the parent wins
    parents = [h for h in dict.fromkeys(hits) if "." not in h]
    if (
        len(hits) > 1
        and len(parents) == 1
        and all(h == parents[0] or h.startswith(parents[0][:31] + ".") for h in hits)
    ):
        return parents[0]
    if len(hits) > 1:
        shown = ", ".join(short_id(h) for h in hits[:5])
        raise ParseError(f'ambiguous task id "{ref}": it starts {len(hits)} tasks ({shown}); type more of it')
    return hits[0] if hits else ref


async def resolve_session(ctx: Context, ref: str) -> str:
    if ref in (".", "this", "current"):
        return ctx.session_id
    if ctx.session_id.startswith(ref):
        return ctx.session_id
    sessions = await ctx.call(lambda c: c.list_sessions(limit=SCAN_LIMIT))
    hits = [s.session_id for s in sessions if s.session_id.startswith(ref)]
    if ref in hits:
        return ref
    if len(hits) > 1:
        shown = ", ".join(short_id(h) for h in hits[:5])
        raise ParseError(f'ambiguous session id "{ref}": it starts {len(hits)} sessions ({shown})')
    return hits[0] if hits else ref


def _remember(ctx: Context, tasks: list[Task]) -> None:
    ctx.recent_tasks = list(dict.fromkeys([*(t.task_id for t in tasks), *ctx.recent_tasks]))[:SCAN_LIMIT]


def _limit(args: list[str], default: int, usage: str) -> int:
    if not args:
        return default
    try:
        n = int(args[0])
    except ValueError:
        raise ParseError(f'expected a number, got "{args[0]}": usage {usage}') from None
    if n < 1:
        raise ParseError(f"expected a number of 1 or more, got {n}: usage {usage}")
    return n


def _task_json(t: Task) -> dict[str, Any]:
    d = dicts.task_to_dict(t)
    d["result"] = render.result_json(t.result)
    d.pop("inputs", None)
    return d


def _session_json(s: SessionInfo) -> dict[str, Any]:
    return dicts.session_to_dict(s)


# ---------------------------------------------------------------- help, quit


@meta(
    "help",
    "/help [COMMAND]",
    "this help, or one command's",
    aliases=("?",),
    args=(0, 1),
    complete="command",
    offline=True,
)
async def help_(ctx: Context, args: list[str]) -> None:
    from .registry import lookup

    if ctx.connected:  # the declared types, when the daemon can tell
        with contextlib.suppress(CliError):
            await ctx.refresh_agents()
    if args:
        name = args[0].lstrip("/").lower()
        spec = lookup(name)
        if spec is not None:
            alias = f" (also /{', /'.join(spec.aliases)})" if spec.aliases else ""
            ctx.out.record(
                "help",
                {"command": spec.name, "usage": spec.usage, "help": spec.help},
                [[("cmd.meta", spec.usage)], [("", f"  {spec.help}{alias}")]],
            )
            return
        if agents.resolve(name, ctx.known_types()) is None:
            raise ParseError(f'no command "/{name}": /help lists them')
        if name in ctx.declared:
            what = ctx.declared[name] or "declared in the daemon's agents directory"
            ctx.out.record(
                "help",
                {"agent_type": name, "description": what, "declared": True},
                [[("cmd.agent", f'/{name} run "..."')], [("", f"  {what} (declared)")]],
            )
            return
    ctx.out.record("help", {"text": "\n".join(render.plain(x) for x in help_lines(ctx))}, help_lines(ctx))


def help_lines(ctx: Context) -> list[Line]:
    lines: list[Line] = [
        [("head", "Agent commands")],
        [("cmd.agent", f"  {FORM} [--approve] [-o KEY=VALUE] [--id TASK_ID]")],
    ]
    rev: dict[str, list[str]] = {}
    for alias, full in agents.ALIASES.items():
        rev.setdefault(full, []).append(alias)
    named = [f"{t} ({', '.join(rev[t])})" if t in rev else t for t in agents.BUILTIN_TYPES]
    remote = [t for t in ctx.known_types() if t not in agents.BUILTIN_TYPES and t not in ctx.declared]
    lines.append([("", "  agents   "), ("cmd.agent", ", ".join(named))])
    if ctx.declared:  # declared in the daemon's agents directory (docs/agents.md)
        lines.append([("", "           declared: "), ("cmd.agent", ", ".join(sorted(ctx.declared)))])
    if remote:
        lines.append([("", "           remote: "), ("cmd.agent", ", ".join(remote))])
    for i, (action, what) in enumerate(agents.ACTIONS.items()):
        lines.append([("", "  actions  " if i == 0 else "           "), ("cmd.action", f"{action:11}"), ("", what)])
    lines += [
        [("", '  input    "quoted text" or bare words; | language is optional (default python)')],
        [
            ("cmd.option", "  --approve     "),
            (
                "",
                "ask before each tool call the agent makes; answer y (yes), "
                "y -N or a N (yes to the next N), n (no), or feedback text",
            ),
        ],
        [("cmd.option", "  -o KEY=VALUE  "), ("", "an option for the agent (repeatable), e.g. -o delay=2")],
        [("cmd.option", "  --id TASK_ID  "), ("", "your own task id: submitting it again never runs the task twice")],
        [("", "  e.g.     "), ("cmd.agent", '/architect create "fastapi app" | python')],
        [("", "           "), ("cmd.agent", '/echo run "hello" --approve')],
        [("", "")],
        [("head", "Commands")],
    ]
    usages = [s for s in specs() if ctx.interactive or not s.repl_only]
    width = max(len(s.usage) for s in usages) + 2
    for s in usages:
        lines.append([("cmd.meta", f"  {s.usage:{width}}"), ("", s.help)])
    if ctx.interactive:
        lines += [
            [("", "")],
            [("head", "Keys")],
            [
                (
                    "",
                    "  Tab completes; Up/Down walk the history; Ctrl-C cancels the running task "
                    "(after asking); Ctrl-D or /quit exits",
                )
            ],
        ]
    return lines


@meta(
    "quit",
    "/quit",
    "leave autogpt (running tasks go on in the mesh)",
    aliases=("exit", "q"),
    offline=True,
    repl_only=True,
)
async def quit_(ctx: Context, args: list[str]) -> None:
    ctx.quit = True


# ---------------------------------------------------------------- agents, tasks


@meta("agents", "/agents [TYPE]", "the agents in the registry, as a table", args=(0, 1), complete="agent")
async def agents_(ctx: Context, args: list[str]) -> None:
    kind = (agents.resolve(args[0], ctx.known_types()) or args[0]) if args else ""
    found, declared = await ctx.call(lambda c: c.agents_and_types(kind))
    if not kind:
        ctx.agents, ctx.declared = found, declared
    heads, rows = agents.agent_table(found, ctx.address)
    idle = sum(1 for a in found if str(a.state) == "idle")
    busy = sum(1 for a in found if str(a.state) == "busy")
    lines = table(heads, rows) if rows else []
    lines.append(
        [
            (
                "info",
                f"{len(found)} agent{'s' if len(found) != 1 else ''}: {idle} idle, {busy} busy"
                + ("" if found else " (agents start on demand: " + '/echo run "hi")'),
            )
        ]
    )
    running = {a.agent_type for a in found}
    idle_types = [(n, d) for n, d in sorted(declared.items()) if n not in running]
    if idle_types:  # declared in files: started on demand
        lines.append([("info", "declared, none running (started on demand): ")])
        lines += [[("cmd.agent", f"  {n:16}"), ("", d or "-")] for n, d in idle_types]
    data = [dicts.agent_to_dict(a) for a in found]
    ctx.out.record(
        "agents",
        {"agents": data, "declared": [{"name": n, "description": d} for n, d in sorted(declared.items())]},
        lines,
    )


def _task_rows(tasks: list[Task]) -> list[list[str]]:
    return [
        [
            short_id(t.task_id),
            t.agent_type,
            str(t.action),
            str(t.state),
            age(t.updated_ms),
            one_line(t.input, 50) or "-",
        ]
        for t in tasks
    ]


@meta(
    "tasks",
    "/tasks [N] [all]",
    "the latest N tasks (default 20) of this session, or of every session with all",
    args=(0, 2),
)
async def tasks_(ctx: Context, args: list[str]) -> None:
    every = "all" in [a.lower() for a in args]
    rest = [a for a in args if a.lower() != "all"]
    n = _limit(rest, 20, "/tasks [N] [all]")
    session = "" if every else ctx.session_id
    tasks = await ctx.call(lambda c: c.list_tasks(limit=n, session_id=session))
    _remember(ctx, tasks)
    lines = table(["TASK", "AGENT", "ACTION", "STATE", "UPDATED", "INPUT"], _task_rows(tasks)) if tasks else []
    where = "in every session" if every else "in this session (/tasks all: every session)"
    lines.append([("info", f"{len(tasks)} task{'s' if len(tasks) != 1 else ''} {where}")])
    ctx.out.record("tasks", {"session_id": session, "tasks": [_task_json(t) for t in tasks]}, lines)


@meta(
    "task",
    "/task ID",
    "a task's state, input, events, result and sub-tasks (IDs may be short)",
    args=(1, 1),
    complete="task",
)
async def task_(ctx: Context, args: list[str]) -> None:
    task_id = await resolve_task(ctx, args[0])
    task, events, children = await ctx.call(lambda c: c.get_task(task_id, with_events=True))
    _remember(ctx, [task, *children])
    label = render.TaskLabel(task.task_id, task.agent_type)
    rend = render.EventRenderer(label, fancy=ctx.fancy)
    lines: list[Line] = [
        [("head", f"task {task.task_id}")],
        [
            ("", "  command   "),
            ("cmd.agent", format_command(task.agent_type, str(task.action), task.input, task.language)),
        ],
        [
            ("", "  state     "),
            (render.state_style(str(task.state)), str(task.state)),
            ("error", f": {task.error}" if task.error and str(task.state) != "succeeded" else ""),
        ],
        [("", f"  session   {task.session_id}")],
        [("", f"  agent     {task.agent_id or '-'} (attempts: {task.attempts})")],
        [("", f"  created   {timestamp(task.created_ms)}   updated {timestamp(task.updated_ms)}")],
    ]
    if task.parent_task_id:
        lines.append([("", f"  parent    {task.parent_task_id}")])
    if task.result is not None and (u := usage_text(task.result.usage)):
        lines.append([("", f"  usage     {u}")])
    if events:
        lines.append([("head", f"events ({len(events)})")])
        for ev in events:
            if not isinstance(ev, ResultEvent):
                lines += rend.feed(ev)
        lines += rend.flush()
    if task.result is not None:
        lines.append([("head", "result")])
        if task.result.output:
            lines += [[("output", t)] for t in task.result.output.splitlines()]
        for a in task.result.artifacts:
            lines.append([("artifact", render.artifact_text(a))])
    if children:
        lines.append([("head", f"sub-tasks ({len(children)})")])
        lines += table(["TASK", "AGENT", "ACTION", "STATE", "UPDATED", "INPUT"], _task_rows(children))[1:]
    lines += graph_view.node_table(task, children)  # a graph run: its node executions
    data = {
        "task": _task_json(task),
        "events": [render.event_json(e, task.agent_type) for e in events],
        "children": [_task_json(c) for c in children],
    }
    ctx.out.record("task", data, lines)


@meta("logs", "/logs ID", "a task's stored events (status, logs, steps, artifacts)", args=(1, 1), complete="task")
async def logs_(ctx: Context, args: list[str]) -> None:
    task_id = await resolve_task(ctx, args[0])
    task, events, _ = await ctx.call(lambda c: c.get_task(task_id, with_events=True))
    rend = render.EventRenderer(render.TaskLabel(task.task_id, task.agent_type), fancy=ctx.fancy)
    lines: list[Line] = []
    for ev in events:
        lines += rend.feed(ev)
    lines += rend.flush()
    if not task.state.terminal:
        lines.append(
            [
                (
                    "info",
                    f"task {short_id(task.task_id)} is still {task.state}: /watch {short_id(task.task_id)} follows it",
                )
            ]
        )
    if not events:
        lines.append([("info", f"task {short_id(task.task_id)} has no events")])
    ctx.out.record(
        "logs", {"task_id": task.task_id, "events": [render.event_json(e, task.agent_type) for e in events]}, lines
    )


@meta("watch", "/watch ID", "follow a task's events until it ends", args=(1, 1), complete="task")
async def watch_(ctx: Context, args: list[str]) -> None:
    from .runner import follow, new_view

    task_id = await resolve_task(ctx, args[0])
    if task_id in ctx.views and not ctx.views[task_id].done.is_set():
        ctx.out.info(f"already following task {short_id(task_id)}")
        return
    task, _, _ = await ctx.call(lambda c: c.get_task(task_id, with_events=False))
    view = new_view(ctx, task.task_id, task.agent_type, str(task.action), task.input)
    if ctx.interactive:
        ctx.spawn(follow(ctx, view))
    else:
        await follow(ctx, view)
        if not view.ok:
            raise CliError(f"task {view.short} {view.state}")


@meta("cancel", "/cancel ID [REASON]", "cancel a task (and its sub-tasks)", args=(1, None), complete="task")
async def cancel_(ctx: Context, args: list[str]) -> None:
    task_id = await resolve_task(ctx, args[0])
    reason = " ".join(args[1:]) or "cancelled by the user"
    t = await ctx.call(lambda c: c.cancel(task_id, reason))
    if str(t.state) == "cancelled" or not t.state.terminal:
        text = f"cancelled task {short_id(t.task_id)} ({t.agent_type})"
    else:
        text = f"task {short_id(t.task_id)} ({t.agent_type}) had already {t.state}; nothing to cancel"
    ctx.out.record("cancel", {"task": _task_json(t)}, [[("ok", text)]])


@meta(
    "approve",
    "/approve [ID] y|y -N|n|a N|TEXT",
    "answer a pending tool-call approval: y yes, y -N or a N yes to the next N, n no, other text = feedback",
    args=(1, None),
    complete="task",
    repl_only=True,
)
async def approve_(ctx: Context, args: list[str]) -> None:
    from .approvals import ANSWER_HELP

    queue = ctx.approvals
    pending = queue.head() if queue is not None else None
    if queue is None or pending is None:
        raise CliError("no approval request is waiting")
    target = queue.for_task(args[0]) if len(args[0]) >= 4 and len(args) > 1 else None
    if target is not None:
        args = args[1:]
    else:
        target = pending
    if not args:
        raise ParseError(f"missing answer: {ANSWER_HELP}")
    resp = target.answer(" ".join(args))
    ctx.out.info(f"{resp.decision} sent to task {target.view.short}", "ok")


@meta(
    "fetch",
    "/fetch ID [PATH [DEST]]",
    "download a task's files, whichever host ran it: one PATH (into DEST, default the current "
    "directory), or all of them into ./ID/",
    args=(1, 3),
    complete="task",
)
async def fetch_(ctx: Context, args: list[str]) -> None:
    task_id = await resolve_task(ctx, args[0])
    if len(args) == 1:
        into = Path.cwd() / short_id(task_id)
        saved = await ctx.call(lambda c: c.fetch_all(task_id, into), timeout=600)
        ctx.out.record(
            "fetch", {"task_id": task_id, "saved": [str(p) for p in saved]}, [[("ok", f"saved {p}")] for p in saved]
        )
        return
    dest = Path(args[2]) if len(args) > 2 else Path.cwd()
    got = await ctx.call(lambda c: c.fetch_artifact(task_id, args[1], dest), timeout=300)
    ctx.out.record("fetch", {"task_id": task_id, "path": args[1], "saved": str(got)}, [[("ok", f"saved {got}")]])
