"""One-shot mode: `autogpt -c COMMAND` (repeatable) or one command per line on stdin.

Every line is parsed before anything runs (a bad line exits 2 and runs
nothing). Commands then run one after the other in one session; the first
that fails stops the run unless --keep-going. Blank lines and lines starting
with "#" are skipped.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

from orchgpt.models import Command

from . import registry
from .context import Context
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    ConnectionProblem,
    ParseError,
)
from .grammar import MetaCommand, needs_registry, parse
from .runner import TaskView, run_command


def command_lines(lines: Sequence[str]) -> list[tuple[int, str]]:
    """(line number, text) of the lines that hold a command."""
    out = []
    for i, raw in enumerate(lines, 1):
        text = raw.strip()
        if text and not text.startswith("#"):
            out.append((i, text))
    return out


def parse_all(
    lines: list[tuple[int, str]], known: Sequence[str] = (), numbered: bool = False
) -> list[Command | MetaCommand | str]:
    """Parse every line; a line naming a type not known yet is kept as text."""
    out: list[Command | MetaCommand | str] = []
    for n, text in lines:
        try:
            p = parse(text, known_types=known, meta=registry.names())
        except ParseError as exc:
            if needs_registry(text, registry.names()) and not known:
                out.append(text)
                continue
            raise ParseError(f"line {n}: {exc}" if numbered else str(exc)) from None
        if p is not None:
            out.append(p)
    return out


def _approver(ctx: Context, yes: bool):  # type: ignore[no-untyped-def]
    async def approve(view: TaskView, req):  # type: ignore[no-untyped-def]
        from orchgpt.models import ApprovalDecision, ApprovalResponse

        if req.question:  # a workflow's user_proxy turn: the next line of stdin answers it
            return await answer_from_stdin(ctx, view, req)
        what = f"{req.tool}" + (f" ({req.summary})" if req.summary else "")
        if yes:
            ctx.out.info(f"task {view.short} runs {what}: approved (--yes)")
            return ApprovalResponse(req.request_id, ApprovalDecision.APPROVE)
        ctx.out.error(
            f"task {view.short} asks to run {what}: rejected; pass --yes to approve tool calls "
            "in one-shot mode, or use the interactive prompt"
        )
        return ApprovalResponse(
            req.request_id,
            ApprovalDecision.REJECT,
            feedback="rejected: the user is not there to approve (one-shot mode without --yes)",
        )

    return approve


async def answer_from_stdin(ctx: Context, view: TaskView, req):  # type: ignore[no-untyped-def]
    """A question in one-shot mode: answered by the next line of stdin (piped answers, e.g.
    ``printf 'yes\\nexit\\n' | autogpt -c '/workflow run pair "task"'``); at its end, or on a
    terminal, the answer is empty (the user passes)."""
    import sys

    from .approvals import answer_question

    line = ""
    if not sys.stdin.isatty():
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    ctx.out.info(f"[{view.label}] {req.question.splitlines()[-1]} {line.strip() or '(no answer)'}")
    return answer_question(req, line)


async def run_oneshot(ctx: Context, lines: Sequence[str], *, yes: bool = False, keep_going: bool = False) -> int:
    """Run the commands; returns the exit code (errors are printed as one line)."""
    todo = command_lines(lines)
    if not todo:
        raise ParseError("no command given: e.g. autogpt -c '/echo run \"hello\"'")
    parsed = parse_all(todo, numbered=len(todo) > 1)
    ctx.approver = _approver(ctx, yes)
    current: list[TaskView] = []
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        if main is not None:
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        pass
    try:
        await ctx.call(lambda c: c.check())
        if any(isinstance(p, str) for p in parsed):
            await ctx.refresh_agents(0)
            parsed = parse_all(todo, ctx.known_types() or ["-"], numbered=len(todo) > 1)
        worst = EXIT_OK
        for p in parsed:
            try:
                if isinstance(p, MetaCommand):
                    await registry.dispatch(ctx, p)
                    continue
                assert isinstance(p, Command)
                view = await run_command(ctx, p, on_view=lambda v: current.__setitem__(slice(None), [v]))
                if not view.ok:
                    r = view.result
                    why = (r.error if r is not None and r.error else "") or "no reason given"
                    raise CliError(f"task {view.short} ({view.agent_type}) {view.state}: {why}")
            except ConnectionProblem:
                raise
            except CliError as exc:
                ctx.out.error(str(exc))
                if not keep_going:
                    return exc.exit_code
                worst = worst or exc.exit_code
        return worst
    except asyncio.CancelledError:
        if not interrupted:
            raise
        for view in current:
            if view.result is None:  # (its stream was cut: `done` is set, the task is not over)
                try:
                    await asyncio.wait_for((await ctx.client()).cancel(view.task_id, "interrupted (Ctrl-C)"), 3)
                    ctx.out.error(f"interrupted: cancelled task {view.short} ({view.agent_type})")
                except Exception:
                    ctx.out.error(f"interrupted: task {view.short} may still run (/cancel {view.short})")
        return EXIT_INTERRUPTED
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
