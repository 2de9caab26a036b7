"""The interactive prompt.

Agent commands run in the background: their events are printed above the
prompt while the user keeps typing, each line marked `[<agent> <task-id>]` in
the task's colour. Meta commands run in the foreground. A watch stream on the
orchestrator (with backoff) keeps the connection state in the toolbar and says
"reconnected to ..." when the daemon comes back; task streams resume from the
last event they showed.

Keys: Ctrl-C clears a typed line, or asks to cancel the latest running task;
Ctrl-D exits (tasks go on in the mesh).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchgpt.models import Command

from . import __version__, registry
from .approvals import ANSWER_HELP, ApprovalQueue
from .connect import ConnectionSettings, display_address
from .context import Context
from .errors import EXIT_OK, CliError, ConnectionProblem, ParseError
from .grammar import needs_registry, parse
from .render import Line, one_line, short_id
from .repl_prompt import PromptOutput as PromptOutput
from .repl_prompt import history_path as history_path
from .repl_prompt import safe_file_history, tab_bindings
from .runner import TaskView, backoff, run_command

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output as PTOutput

    from orchgpt.models import ApprovalRequest, ApprovalResponse

AGENTS_REFRESH = 2.0  # seconds between registry refreshes (toolbar, completion)


class Repl:
    def __init__(
        self,
        conn: ConnectionSettings | None = None,
        *,
        history: Path | None = None,
        session_id: str = "",
        approve_all: bool = False,
        timeout: float = 10.0,
        exit_at_prompt: bool = False,
        input: Input | None = None,
        output: PTOutput | None = None,
        agents_refresh: float = AGENTS_REFRESH,
    ) -> None:
        self.out = PromptOutput()
        self.conn = conn or ConnectionSettings()
        self.ctx = Context(
            self.out,
            self.conn,
            session_id=session_id,
            approve_all=approve_all,
            interactive=True,
            reconnect_timeout=None,
            timeout=timeout,
        )
        self.ctx.approvals = ApprovalQueue()
        self.ctx.approver = self.ask_approval
        self.ctx.on_connection_change = self.connection_changed
        self.history = history
        self.exit_at_prompt = exit_at_prompt
        self.input = input
        self.output = output
        self.agents_refresh = agents_refresh
        self.session: PromptSession[str] | None = None
        self.fatal: CliError | None = None
        self.ever_connected = False
        self.reported_failure = False
        self.started_background = False
        self.prompt_ready = asyncio.Event()  # set at each prompt's first render (tests wait on it)
        self.question = ""  # the yes/no question being asked, if any

    # ---------------------------------------------------------------- prompt
    def message(self) -> list[tuple[str, str]]:
        head = self.ctx.approvals.head() if self.ctx.approvals is not None else None
        if head is not None and head.request.question:
            choices = f" [{'/'.join(head.request.choices)}]" if head.request.choices else ""
            return [
                ("class:prompt.question", f"[{head.view.label}] {head.request.question.splitlines()[-1]}{choices} ")
            ]
        if head is not None:
            return [
                ("class:prompt.question", f"approve {head.request.tool} for [{head.view.label}]? [y/y -N/n/feedback] ")
            ]
        return [("class:prompt", "autogpt> ")]

    def bottom_toolbar(self) -> list[tuple[str, str]]:
        from .toolbar import toolbar

        return toolbar(self.ctx)

    def invalidate(self) -> None:
        if self.session is not None:
            self.session.app.invalidate()

    def _build_session(self) -> PromptSession[str]:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
        from prompt_toolkit.history import History, InMemoryHistory

        from .completion import CommandCompleter
        from .lexer import CommandLexer

        history: History = InMemoryHistory()
        if self.history is not None:
            history = safe_file_history(self.history, self.out)
        completer = CommandCompleter(self.ctx)
        session: PromptSession[str] = PromptSession(
            message=self.message,
            history=history,
            completer=completer,
            key_bindings=tab_bindings(completer),
            complete_while_typing=True,
            lexer=CommandLexer(self.ctx.known_types, registry.names),
            bottom_toolbar=self.bottom_toolbar,
            style=self.out.style,
            auto_suggest=AutoSuggestFromHistory(),
            refresh_interval=1.0,
            input=self.input,
            output=self.output,
        )
        session.app.after_render += self._after_render
        return session

    def _after_render(self, app: Any) -> None:
        if self.exit_at_prompt:  # the start-up benchmark: the prompt is on the screen, leave
            if not app.is_done:
                app.exit(exception=EOFError)
            return
        if not self.prompt_ready.is_set():
            self.prompt_ready.set()
        if not self.started_background:
            self.started_background = True
            self.ctx.spawn(self.monitor())
            self.ctx.spawn(self.refresh_agents())

    # ---------------------------------------------------------------- the loop
    async def run(self) -> int:
        from prompt_toolkit.application import create_app_session
        from prompt_toolkit.patch_stdout import patch_stdout

        with create_app_session(input=self.input, output=self.output):
            self.session = self._build_session()
            self.out.info(
                f"autogpt {__version__} · orchestrator {display_address(self.conn)} · "
                f"session {short_id(self.ctx.session_id)} · /help lists the commands, Ctrl-D exits"
            )
            with patch_stdout(raw=True):
                try:
                    return await self.loop()
                finally:
                    await self.shutdown()

    async def loop(self) -> int:
        assert self.session is not None
        while not self.ctx.quit:
            self.prompt_ready.clear()
            try:
                line = await self.session.prompt_async()
            except KeyboardInterrupt:
                typed = self.session.default_buffer.text
                if not typed.strip():
                    await self.interrupt()
                continue
            except EOFError:
                break
            if self.fatal is not None:
                break
            await self.handle(line)
        if self.fatal is not None:
            raise self.fatal
        return EXIT_OK

    async def shutdown(self) -> None:
        running = self.ctx.running()
        if running and self.fatal is None:
            ids = ", ".join(v.short for v in running)
            self.out.info(
                f"{len(running)} task{'s' if len(running) != 1 else ''} still running in the mesh "
                f"({ids}): /watch ID follows {'them' if len(running) != 1 else 'it'} later"
            )
        await self.ctx.cancel_background()
        await self.ctx.close()

    async def handle(self, line: str) -> None:
        """Run one line: an approval answer, a meta command or an agent command."""
        text = line.strip()
        ctx = self.ctx
        head = ctx.approvals.head() if ctx.approvals is not None else None
        if not text and not (head is not None and head.request.question):  # an empty answer: pass
            return
        if head is not None and not text.startswith("/"):
            try:
                resp = head.answer(text)
            except ParseError as exc:
                self.out.error(str(exc))
                return
            what = f"answer {resp.answer!r}" if head.request.question else str(resp.decision)
            self.out.info(f"{what} sent to task {head.view.short}", "ok")
            return
        try:
            parsed = self.parse(text)
            if parsed is None:
                parsed = await self.parse_with_registry(text)
            if isinstance(parsed, Command):
                ctx.spawn(self.run_task(parsed))
            elif parsed is not None:
                await registry.dispatch(ctx, parsed)
        except CliError as exc:
            self.out.error(str(exc))

    def parse(self, text: str):  # type: ignore[no-untyped-def]
        """Parse with the known types; None when only the live registry can tell."""
        try:
            return parse(text, known_types=self.ctx.known_types(), meta=registry.names())
        except ParseError:
            if needs_registry(text, registry.names()) and self.ctx.connected:
                return None
            raise

    async def parse_with_registry(self, text: str):  # type: ignore[no-untyped-def]
        await self.ctx.refresh_agents(0)
        return parse(text, known_types=self.ctx.known_types(), meta=registry.names())

    async def run_task(self, cmd: Command) -> None:
        await run_command(self.ctx, cmd)
        self.invalidate()

    # ---------------------------------------------------------------- Ctrl-C
    async def interrupt(self) -> None:
        fg = self.ctx.foreground()
        if fg is None:
            self.out.info("nothing to cancel (Ctrl-D or /quit exits)")
            return
        others = len(self.ctx.running()) - 1
        note = f" ({others} other task{'s' if others != 1 else ''} keep running)" if others > 0 else ""
        answer = await self.confirm(f"cancel task [{fg.label}] {one_line(fg.input, 30)}?{note} [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            self.out.info(f"task {fg.short} goes on")
            return
        if fg.done.is_set():
            self.out.info(f"task {fg.short} has already ended ({fg.state})")
            return
        try:
            await self.ctx.call(lambda c: c.cancel(fg.task_id, "cancelled by the user (Ctrl-C)"))
        except CliError as exc:
            self.out.error(f"could not cancel task {fg.short}: {exc}")

    async def confirm(self, question: str) -> str:
        from prompt_toolkit import PromptSession

        session: PromptSession[str] = PromptSession(input=self.input, output=self.output, style=self.out.style)
        session.app.after_render += lambda _app: self.prompt_ready.set()
        self.prompt_ready.clear()
        self.question = question
        try:
            return await session.prompt_async([("class:prompt.question", question)])
        except (KeyboardInterrupt, EOFError):
            return ""
        finally:
            self.question = ""

    # ---------------------------------------------------------------- approvals
    async def ask_approval(self, view: TaskView, req: ApprovalRequest) -> ApprovalResponse | None:
        lines: list[Line] = [
            [("approval", f"[{view.label}] wants to run {req.tool}" + (f": {req.summary}" if req.summary else ""))]
        ]
        if req.question:  # a workflow's user_proxy turn: the next line is the answer
            lines = [
                [("approval", f"[{view.label}] asks you:")],
                *([("", f"  {x}")] for x in req.question.splitlines()),
            ]
            hint = f"a number or a name: {', '.join(req.choices)}" if req.choices else "empty: pass"
            lines.append([("info", f"  answer with a line ({hint})")])
        if req.arguments_json:
            args = req.arguments_json if len(req.arguments_json) <= 400 else req.arguments_json[:397] + "..."
            lines.append([("info", f"  arguments: {args}")])
        if not req.question:
            lines.append([("info", f"  answer: {ANSWER_HELP}")])
        self.out.lines(lines)
        assert self.ctx.approvals is not None
        task = asyncio.ensure_future(self.ctx.approvals.ask(view, req))
        self.invalidate()
        try:
            return await task
        finally:
            self.invalidate()

    # ---------------------------------------------------------------- connection
    def connection_changed(self, ok: bool, error: str) -> None:
        if ok:
            if self.ever_connected:
                self.out.info(f"reconnected to {self.ctx.address}", "ok")
            elif self.reported_failure:
                self.out.info(f"connected to {self.ctx.address}", "ok")
            self.ever_connected = True
        elif self.ever_connected:  # (the detail of a broken stream says little)
            self.out.error(f"lost the orchestrator at {self.ctx.address}; reconnecting...")
        elif not self.reported_failure:
            self.reported_failure = True
            self.out.error(f"{one_line(error, 200)} (retrying in the background)")
        self.invalidate()

    async def monitor(self) -> None:
        """Keep a watch stream open; its breaking and coming back drive the connection state."""
        import importlib

        await asyncio.to_thread(importlib.import_module, "orchgpt.client")  # off the UI thread
        ctx = self.ctx
        attempt = 0
        while not ctx.quit:
            try:
                client = await ctx.client()
            except ConnectionProblem as exc:  # malformed address, missing certificate: fatal
                self.fatal = exc
                if self.session is not None and self.session.app.is_running:
                    self.session.app.exit(exception=EOFError)
                return
            try:
                await ctx.call(lambda c: c.check(), timeout=5)
                attempt = 0
                async for _ev in client.watch(""):
                    pass  # the stream is the heartbeat; task views follow their own streams
                ctx.set_connected(False, "the orchestrator closed the stream")
            except asyncio.CancelledError:
                raise
            except CliError:
                pass  # ctx.call recorded the state
            except Exception as exc:
                from .connect import classify

                ctx.set_connected(False, str(classify(exc)))
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def refresh_agents(self) -> None:
        while not self.ctx.quit:
            if self.ctx.connected:
                try:
                    await self.ctx.refresh_agents(0)
                except CliError:
                    pass
                self.invalidate()
            await asyncio.sleep(self.agents_refresh)
