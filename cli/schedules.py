"""/schedule and /schedules: commands fired on cron expressions by the daemon (docs/schedules.md).

    /schedule add 'CRON' [--tz ZONE] [--catch-up once|skip] GRAPH_ID ['{"input": ...}']
    /schedule add 'CRON' [--tz ZONE] [--catch-up once|skip] /architect create "fastapi app"
    /schedule show|pause|resume|delete ID
    /schedules

A graph target is the command the graph agent type runs: ``/graph run`` with the input JSON
and option ``graph_id``; an agent target is any line of the agent grammar (cli/grammar.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchgpt.models import Action, Command
from orchgpt.wire import dicts

from . import agents
from .errors import ParseError
from .grammar import format_command, parse, quote
from .registry import meta
from .render import Line, one_line, short_id, table, timestamp

if TYPE_CHECKING:
    from orchgpt.schedules import Schedule, ScheduleRun

    from .context import Context

USAGE = (
    "/schedule add 'CRON' [--tz ZONE] [--catch-up once|skip] (GRAPH_ID ['{\"input\": ...}'] "
    "| /AGENT ACTION [input])  or  /schedule show|pause|resume|delete ID"
)
GRAPH_TYPE = "graph"  # the agent type that runs graphs (issue 14: Command(graph, RUN, input, graph_id)
EXAMPLE = "/schedule add '*/5 * * * *' /echo run \"hello\""


def parse_add(args: list[str], known_types: list[str]) -> tuple[str, str, str, Command]:
    """``add``'s arguments -> (cron, timezone, catch_up, command); ParseError naming the problem."""
    if not args:
        raise ParseError(f"/schedule add needs a cron expression in quotes, e.g. {EXAMPLE}")
    cron, rest = args[0], list(args[1:])
    if len(cron.split()) < 5:
        raise ParseError(
            f"/schedule add: {cron!r} is not a cron expression (five fields, or six with "
            f"seconds last; quote it), e.g. {EXAMPLE}"
        )
    tz = catch_up = ""
    while rest and rest[0].startswith("--"):
        name, eq, value = rest.pop(0).partition("=")
        if not eq:
            if not rest:
                raise ParseError(f"/schedule add: option {name} needs a value")
            value = rest.pop(0)
        if name == "--tz":
            tz = value
        elif name == "--catch-up":
            if value not in ("once", "skip"):
                raise ParseError(f"/schedule add: --catch-up {value!r}: expected once or skip")
            catch_up = value
        else:
            raise ParseError(
                f"/schedule add: unknown option {name!r}: use --tz ZONE or --catch-up once|skip before the command"
            )
    if not rest:
        raise ParseError(f"/schedule add: what should run? a graph id or an agent command, e.g. {EXAMPLE}")
    if rest[0].startswith("/"):
        line = " ".join(a if a == "|" else quote(a) for a in rest)
        cmd = parse(line, known_types=known_types)
        if not isinstance(cmd, Command):
            raise ParseError(f"/schedule add: {rest[0]} is not an agent command, e.g. {EXAMPLE}")
        return cron, tz, catch_up, cmd
    graph_id, payload = rest[0], rest[1:]
    if len(payload) > 1:
        raise ParseError(
            "/schedule add: one graph input after the graph id, as JSON in quotes: GRAPH_ID '{\"input\": ...}'"
        )
    text = payload[0] if payload else "{}"
    try:
        json.loads(text)
    except ValueError as exc:
        raise ParseError(f"/schedule add: the graph input is not JSON ({exc}): GRAPH_ID '{{\"input\": ...}}'") from None
    return cron, tz, catch_up, Command(GRAPH_TYPE, Action.RUN, text, options={"graph_id": graph_id})


def target(s: Schedule) -> str:
    c = s.command
    if c.agent_type == GRAPH_TYPE and "graph_id" in c.options:
        return f"graph {c.options['graph_id']} {one_line(c.input, 40)}"
    return format_command(c.agent_type, str(c.action), c.input, c.language)


def schedule_json(s: Schedule) -> dict[str, Any]:
    d = {k: v for k, v in s.__dict__.items() if k != "command"}
    d["command"] = dicts.command_to_dict(s.command)
    return d


def _rows(found: list[Schedule]) -> list[list[str]]:
    return [
        [
            short_id(s.schedule_id),
            s.state,
            s.cron + ("" if s.timezone == "UTC" else f" ({s.timezone})"),
            timestamp(s.next_run_ms),
            timestamp(s.last_run_ms),
            str(s.runs),
            "error: " + one_line(s.last_error, 40) if s.last_error else one_line(target(s), 60),
        ]
        for s in found
    ]


_COLUMNS = ["SCHEDULE", "STATE", "CRON", "NEXT RUN", "LAST RUN", "RUNS", "COMMAND"]


@meta("schedules", "/schedules", "your schedules: state, next and last run, what each runs")
async def schedules_(ctx: Context, args: list[str]) -> None:
    found = await ctx.call(lambda c: c.list_schedules())
    lines = table(_COLUMNS, _rows(found)) if found else []
    lines.append(
        [
            (
                "info",
                f"{len(found)} schedule{'s' if len(found) != 1 else ''}" + ("" if found else f" (add one: {EXAMPLE})"),
            )
        ]
    )
    ctx.out.record("schedules", {"schedules": [schedule_json(s) for s in found]}, lines)


def _run_rows(runs: list[ScheduleRun]) -> list[list[str]]:
    """A run per row; the task id last (a missed period's start before it, errors below)."""
    return [
        [
            timestamp(r.tick_ms),
            r.kind,
            r.state,
            r.task_state or "-",
            timestamp(r.missed_from_ms)[11:] if r.missed_from_ms else "-",
            r.task_id or "-",
        ]
        for r in runs
    ]


@meta(
    "schedule",
    "/schedule add|show|pause|resume|delete ...",
    "fire a command on a cron expression (6 fields: seconds last), e.g. " + EXAMPLE,
    args=(1, None),
)
async def schedule_(ctx: Context, args: list[str]) -> None:
    sub, rest = args[0].lower(), args[1:]
    if sub == "add":
        first = next((a for a in rest[1:] if a.startswith("/")), "")
        if first and agents.resolve(first[1:]) is None:
            ctx.agents = await ctx.call(lambda c: c.list_agents())  # a type only the registry knows
        cron, tz, catch_up, cmd = parse_add(rest, ctx.known_types())
        s = await ctx.call(lambda c: c.add_schedule(cron, cmd, tz, catch_up))
        lines: list[Line] = [
            [
                (
                    "info",
                    f"schedule {s.schedule_id} added: {target(s)}; next run "
                    f"{timestamp(s.next_run_ms)} (catch-up: {s.catch_up})",
                )
            ]
        ]
        ctx.out.record("schedule", {"schedule": schedule_json(s)}, lines)
        return
    if sub not in ("show", "pause", "resume", "delete") or len(rest) != 1:
        raise ParseError(f"usage: {USAGE}")
    ref = rest[0]
    if sub == "delete":
        await ctx.call(lambda c: c.delete_schedule(ref))
        ctx.out.record("schedule", {"deleted": ref}, [[("info", f"schedule {ref} deleted")]])
        return
    if sub in ("pause", "resume"):
        call = (lambda c: c.pause_schedule(ref)) if sub == "pause" else (lambda c: c.resume_schedule(ref))
        s = await ctx.call(call)
        lines = [
            [
                (
                    "info",
                    f"schedule {short_id(s.schedule_id)} {s.state}; next run {timestamp(s.next_run_ms)}",
                )
            ]
        ]
        ctx.out.record("schedule", {"schedule": schedule_json(s)}, lines)
        return
    s, runs = await ctx.call(lambda c: c.get_schedule(ref, 50))
    lines = [
        [("head", f"schedule {s.schedule_id}")],
        [("", "  command   "), ("cmd.agent", target(s))],
        [("", f"  cron      {s.cron} ({s.timezone}); catch-up: {s.catch_up}; {s.state}")],
        [
            (
                "",
                f"  next run  {timestamp(s.next_run_ms)}   last run {timestamp(s.last_run_ms)}   runs {s.runs}",
            )
        ],
    ]
    if s.last_error:
        lines.append([("error", f"  last error {s.last_error}")])
    if runs:
        lines.append([("head", f"history ({len(runs)}, newest first)")])
        cols = ["TICK", "KIND", "RUN", "TASK STATE", "MISSED FROM", "TASK"]
        lines += table(cols, _run_rows(runs))
        lines += [[("error", f"  {timestamp(r.tick_ms)}: {r.error}")] for r in runs if r.error]
    data = {"schedule": schedule_json(s), "runs": [r.__dict__ for r in runs]}
    ctx.out.record("schedule", data, lines)
