"""Workflow commands (/workflows, /workflow run|show) and the session operations
(/history delete MSG_ID, /session clear|delete|messages ID), registered like the other meta
commands. ``/workflow run NAME "task"`` streams each speaker's turn (the sub-task's events are
labelled with the speaker) and ends with the summary and a usage table per agent and model.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchgpt.models import Action, Command

from . import meta as _base  # noqa: F401  (registers /history and /session, extended below)
from .errors import CliError, ParseError
from .registry import extend, meta
from .render import Line, one_line, short_id, table, timestamp

if TYPE_CHECKING:
    from orchgpt.models import SessionMessage, TaskResult

    from .context import Context

RUN_USAGE = '/workflow run NAME "task" | /workflow show NAME'


def _participants(d: dict[str, Any]) -> str:
    return ", ".join(
        a["name"] + (f" ({a['type']})" if a.get("type") and a["type"] != a["name"] else "") for a in d.get("agents", [])
    )


@meta("workflows", "/workflows", "the workflows the daemon loaded (its workflows directory)")
async def workflows_(ctx: Context, args: list[str]) -> None:
    found, errors = await ctx.call(lambda c: c.list_workflows())
    ctx.workflow_names = [d["name"] for d in found]
    rows = [
        [
            d["name"],
            d.get("type", ""),
            _participants(d),
            one_line(d.get("description", ""), 40) or "-",
        ]
        for d in found
    ]
    lines: list[Line] = table(["WORKFLOW", "TYPE", "AGENTS", "DESCRIPTION"], rows) if rows else []
    lines += [[("error", f"not loaded: {e}")] for e in errors]
    lines.append(
        [
            (
                "info",
                f"{len(found)} workflow{'s' if len(found) != 1 else ''}"
                + (
                    '; /workflow run NAME "task" runs one'
                    if found
                    else " (put NAME.toml files in the daemon's workflows directory, --workflows-dir)"
                ),
            )
        ]
    )
    ctx.out.record("workflows", {"workflows": found, "errors": errors}, lines)


@meta("workflow", RUN_USAGE, "run a workflow on a task, or show its definition", args=(2, 3))
async def workflow_(ctx: Context, args: list[str]) -> None:
    what, name = args[0].lower(), args[1]
    if what == "show":
        if len(args) > 2:
            raise ParseError(f"/workflow show takes a name only: usage {RUN_USAGE}")
        await _show(ctx, name)
    elif what == "run":
        if len(args) < 3 or not args[2].strip():
            raise ParseError(f"/workflow run needs a task: usage {RUN_USAGE}")
        if ctx.interactive:  # the prompt stays free: the user_proxy's questions are answered there
            ctx.spawn(_run(ctx, name, args[2]))
        else:
            await _run(ctx, name, args[2])
    else:
        raise ParseError(f"/workflow {what}: expected run or show: usage {RUN_USAGE}")


async def _show(ctx: Context, name: str) -> None:
    d = await ctx.call(lambda c: c.get_workflow(name))
    lines: list[Line] = [[("head", f"workflow {d['name']} ({d['type']})")]]
    if d.get("description"):
        lines.append([("", f"  {d['description']}")])
    keys = ["summary_method", "path"]
    if d["type"] == "groupchat":
        keys[1:1] = ["speaker_selection", "max_rounds", "termination", "human_input_mode"]
        if d.get("terminated_by"):
            keys.insert(4, "terminated_by")

    def shown(v: Any) -> str:
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    lines += [[("", f"  {k:<18}{shown(d.get(k, ''))}")] for k in keys]
    rows = [[a["name"], a.get("type", ""), one_line(a.get("description", ""), 50) or "-"] for a in d.get("agents", [])]
    lines += [[("", "")], *table(["AGENT", "TYPE", "DESCRIPTION"], rows)]
    ctx.out.record("workflow", {"workflow": d}, lines)


async def _run(ctx: Context, name: str, task: str) -> None:
    from .runner import run_command

    view = await run_command(ctx, Command("workflow", Action.RUN, task, options={"workflow": name}))
    r = view.result
    if r is None or not view.ok:
        why = (r.error if r is not None and r.error else "") or view.error or "no reason given"
        raise CliError(f"workflow {name} ({view.short}) {view.state}: {why}")
    ctx.out.record("workflow_result", result_json(r), result_lines(name, r))


def usage_rows(usage: dict[str, Any]) -> list[list[str]]:
    rows = []
    for agent, u in [*usage.get("agents", {}).items(), ("total", usage.get("total", {}))]:
        models = [(m, v) for m, v in u.items() if isinstance(v, dict)] or [("-", {})]
        for m, v in models:
            rows.append(
                [
                    agent,
                    m,
                    str(v.get("prompt_tokens", 0)),
                    str(v.get("completion_tokens", 0)),
                    str(v.get("total_tokens", 0)),
                    f"${v.get('cost', 0.0):.4f}",
                ]
            )
    return rows


def result_json(r: TaskResult) -> dict[str, Any]:
    d = r.data
    return {
        "task_id": r.task_id,
        "workflow": d.get("workflow", ""),
        "summary": r.output,
        "stop_reason": d.get("stop_reason", ""),
        "turns": int(d.get("turns", "0") or 0),
        "transcript": json.loads(d.get("transcript", "[]") or "[]"),
        "usage": json.loads(d.get("usage_summary", "{}") or "{}"),
    }


def result_lines(name: str, r: TaskResult) -> list[Line]:
    j = result_json(r)
    usage = j["usage"]
    lines: list[Line] = [
        [("head", f"workflow {name}: {j['turns']} turns ({j['stop_reason']})")],
        [("", "summary: "), ("ok", r.output)],
        [
            (
                "info",
                f"from {usage.get('start_time', '?')} to {usage.get('end_time', '?')}; "
                f"total ${usage.get('total', {}).get('total_cost', 0.0):.4f}",
            )
        ],
    ]
    return lines + table(["AGENT", "MODEL", "PROMPT", "COMPLETION", "TOTAL", "COST"], usage_rows(usage))


# ---------------------------------------------------------------- session operations


async def delete_message(ctx: Context, args: list[str]) -> None:
    if len(args) != 1:
        raise ParseError("usage /history delete MSG_ID (/session messages lists them)")
    n = await ctx.call(lambda c: c.delete_message(args[0]))
    ctx.out.record(
        "message_deleted",
        {"message_id": args[0], "deleted": n},
        [[("ok", f"deleted message {args[0]}")]],
    )


async def session_messages(ctx: Context, args: list[str]) -> None:
    await session_op(ctx, "messages", args)


async def session_clear(ctx: Context, args: list[str]) -> None:
    await session_op(ctx, "clear", args)


async def session_delete(ctx: Context, args: list[str]) -> None:
    await session_op(ctx, "delete", args)


async def session_op(ctx: Context, op: str, args: list[str]) -> None:
    from .meta import resolve_session

    if len(args) > 1:
        raise ParseError(f"usage /session {op} [ID]")
    sid = await resolve_session(ctx, args[0]) if args else ctx.session_id
    if op == "messages":
        msgs = await ctx.call(lambda c: c.list_messages(sid))
        ctx.out.record(
            "messages",
            {"session_id": sid, "messages": [_message_json(m) for m in msgs]},
            _message_lines(sid, msgs),
        )
    elif op == "clear":
        n = await ctx.call(lambda c: c.clear_session(sid))
        ctx.out.record(
            "session_cleared",
            {"session_id": sid, "deleted": n},
            [
                [
                    (
                        "ok",
                        f"cleared session {short_id(sid)}: {n} message{'s' if n != 1 else ''} deleted",
                    )
                ]
            ],
        )
    else:
        n = await ctx.call(lambda c: c.delete_session(sid))
        ctx.out.record(
            "session_deleted",
            {"session_id": sid, "deleted": n},
            [[("ok", f"deleted session {short_id(sid)} ({n} messages and tasks)")]],
        )


def _message_json(m: SessionMessage) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "session_id": m.session_id,
        "task_id": m.task_id,
        "speaker": m.speaker,
        "role": m.role,
        "content": m.content,
        "ts_ms": m.ts_ms,
    }


def _message_lines(sid: str, msgs: list[SessionMessage]) -> list[Line]:
    lines: list[Line] = [[("head", f"session {sid}: {len(msgs)} message{'s' if len(msgs) != 1 else ''}")]]
    for m in msgs:
        lines.append(
            [
                ("info", f"  {timestamp(m.ts_ms)}  {m.message_id}  "),
                ("cmd.agent", f"{m.speaker}: "),
                ("", one_line(m.content, 80)),
            ]
        )
    if not msgs:
        lines.append([("info", "  no messages")])
    return lines


extend(
    "history",
    {"delete": delete_message},
    "/history [N] | /history delete MSG_ID",
    "the last N commands (default 20) of every session, with their results; delete a message",
    2,
)
extend(
    "session",
    {"messages": session_messages, "clear": session_clear, "delete": session_delete},
    "/session [ID] | /session messages|clear|delete [ID]",
    "one session in detail (default this one); its messages; clear its messages; delete it",
    2,
)
