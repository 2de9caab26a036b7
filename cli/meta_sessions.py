"""The meta commands of history and sessions: /history, /sessions, /session, /publish, /gallery
(registered when cli.registry loads the commands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import render
from .errors import CliError
from .grammar import format_command
from .meta import SCAN_LIMIT, _limit, _remember, _session_json, _task_json, resolve_session
from .registry import meta
from .render import Line, age, one_line, short_id, table, timestamp, usage_text

if TYPE_CHECKING:
    from orchgpt.models import SessionInfo

    from .context import Context


@meta("history", "/history [N]", "the last N commands (default 20) of every session, with their results", args=(0, 1))
async def history_(ctx: Context, args: list[str]) -> None:
    n = _limit(args, 20, "/history [N]")
    tasks = await ctx.call(lambda c: c.list_tasks(limit=n))
    _remember(ctx, tasks)
    lines: list[Line] = []
    session = None
    for t in reversed(tasks):
        if t.session_id != session:
            session = t.session_id
            mark = " (this session)" if session == ctx.session_id else ""
            lines.append([("head", f"session {short_id(session)}{mark}")])
        outcome = str(t.state)
        if t.result is not None and t.result.output and str(t.state) == "succeeded":
            outcome += ": " + one_line(t.result.output, 50)
        elif t.error or (t.result is not None and t.result.error):
            outcome += ": " + one_line(t.error or (t.result.error if t.result else ""), 50)
        lines.append(
            [
                ("info", f"  {timestamp(t.created_ms)}  {short_id(t.task_id)}  "),
                ("cmd.agent", format_command(t.agent_type, str(t.action), t.input, t.language)),
                ("", "  -> "),
                (render.state_style(str(t.state)), outcome),
            ]
        )
    if not tasks:
        lines.append([("info", "no commands yet")])
    ctx.out.record("history", {"tasks": [_task_json(t) for t in reversed(tasks)]}, lines)


def _session_rows(sessions: list[SessionInfo], current: str) -> list[list[str]]:
    return [
        [
            short_id(s.session_id) + ("*" if s.session_id == current else ""),
            timestamp(s.created_ms),
            age(s.updated_ms),
            str(s.task_count),
            str(s.message_count),
            str(s.usage.total_tokens),
            f"${s.usage.cost_usd:.4f}",
            "yes" if s.published else "-",
            ", ".join(s.tags) or "-",
            one_line(s.title, 40) or "-",
        ]
        for s in sessions
    ]


SESSION_COLUMNS = ["SESSION", "STARTED", "UPDATED", "TASKS", "MSGS", "TOKENS", "COST", "PUBLISHED", "TAGS", "TITLE"]


@meta("sessions", "/sessions [N]", "the latest N sessions (default 20): tasks, messages, tokens, cost", args=(0, 1))
async def sessions_(ctx: Context, args: list[str]) -> None:
    n = _limit(args, 20, "/sessions [N]")
    sessions = await ctx.call(lambda c: c.list_sessions(limit=n))
    ctx.recent_sessions = [s.session_id for s in sessions]
    lines = table(SESSION_COLUMNS, _session_rows(sessions, ctx.session_id)) if sessions else []
    lines.append(
        [
            (
                "info",
                f"{len(sessions)} session{'s' if len(sessions) != 1 else ''}"
                f" (this one: {short_id(ctx.session_id)}; /session ID for one in detail)",
            )
        ]
    )
    ctx.out.record("sessions", {"sessions": [_session_json(s) for s in sessions]}, lines)


@meta(
    "session",
    "/session [ID]",
    "one session in detail (default this one): times, messages, usage per agent",
    args=(0, 1),
    complete="session",
)
async def session_(ctx: Context, args: list[str]) -> None:
    sid = await resolve_session(ctx, args[0]) if args else ctx.session_id
    sessions = await ctx.call(lambda c: c.list_sessions(limit=SCAN_LIMIT))
    s = next((x for x in sessions if x.session_id == sid), None)
    if s is None:
        if sid == ctx.session_id:
            ctx.out.record(
                "session", {"session": {"session_id": sid}}, [[("", f"session {sid} (this one): no tasks yet")]]
            )
            return
        raise CliError(f'no session "{args[0]}": /sessions lists them')
    lines: list[Line] = [
        [("head", f"session {s.session_id}" + (" (this one)" if sid == ctx.session_id else ""))],
        [("", f"  started   {timestamp(s.created_ms)}")],
        [("", f"  ended     {timestamp(s.updated_ms)}  (last activity)")],
        [("", f"  tasks     {s.task_count}   messages {s.message_count}")],
        [("", f"  usage     {usage_text(s.usage) or 'no model calls'}")],
    ]
    if s.title:
        lines.insert(1, [("", f"  title     {s.title}")])
    if s.published:
        lines.append([("", f"  published tags: {', '.join(s.tags) or '-'}")])
    if s.usage_by_agent:
        rows = [
            [agent, str(u.calls), str(u.prompt_tokens), str(u.completion_tokens), f"${u.cost_usd:.4f}", u.model or "-"]
            for agent, u in sorted(s.usage_by_agent.items())
        ]
        lines += [[("", "")], *table(["AGENT", "CALLS", "PROMPT", "COMPLETION", "COST", "MODEL"], rows)]
    ctx.out.record("session", {"session": _session_json(s)}, lines)


@meta(
    "publish",
    "/publish SESSION [TAG ...]",
    "publish a session to the gallery (SESSION may be . for this one)",
    args=(1, None),
    complete="session",
)
async def publish_(ctx: Context, args: list[str]) -> None:
    sid = await resolve_session(ctx, args[0])
    tags = [t.strip(",") for t in args[1:] if t.strip(",")]
    s = await ctx.call(lambda c: c.publish_session(sid, tags))
    text = f"published session {short_id(s.session_id)}" + (f" with tags {', '.join(s.tags)}" if s.tags else "")
    ctx.out.record("publish", {"session": _session_json(s)}, [[("ok", text + " (/gallery lists it)")]])


@meta("gallery", "/gallery [N]", "the published sessions", args=(0, 1))
async def gallery_(ctx: Context, args: list[str]) -> None:
    n = _limit(args, 50, "/gallery [N]")
    sessions = await ctx.call(lambda c: c.list_sessions(limit=n, published_only=True))
    ctx.recent_sessions = list(dict.fromkeys([*(s.session_id for s in sessions), *ctx.recent_sessions]))
    lines = table(SESSION_COLUMNS, _session_rows(sessions, ctx.session_id)) if sessions else []
    lines.append(
        [
            (
                "info",
                f"{len(sessions)} published session{'s' if len(sessions) != 1 else ''}"
                + ("" if sessions else " (/publish SESSION [TAG ...] adds one)"),
            )
        ]
    )
    ctx.out.record("gallery", {"sessions": [_session_json(s) for s in sessions]}, lines)
