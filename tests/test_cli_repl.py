"""The autogpt REPL driven through prompt-toolkit's pipe input, against a real orchgpt.

Keys go in through `create_pipe_input()`; the screen is a DummyOutput and what
the REPL prints above the prompt is read from its transcript. The daemon is a
real `orchgpt serve` subprocess spawning real echo agents.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from orchgpt_cli.connect import ConnectionSettings
from orchgpt_cli.errors import CliError
from orchgpt_cli.render import plain
from orchgpt_cli.repl import Repl, history_path
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import init_dir, paths_for
from orchgpt.models import Action, Delegation
from tests.support.mesh import Daemon, issue

ENTER, CTRL_C, CTRL_D, CTRL_U, TAB, UP = "\r", "\x03", "\x04", "\x15", "\t", "\x1b[A"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("cli-repl")
    init_dir(root / "certs")
    d = Daemon(workdir=root, certs=root / "certs", data_dir=root / "data")
    d.start()
    yield d
    d.kill()


async def until(pred: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Driver:
    def __init__(self, repl: Repl, inp: object, task: asyncio.Task[int]) -> None:
        self.repl = repl
        self.inp = inp
        self.task = task

    @property
    def transcript(self) -> list[str]:
        return list(self.repl.out.transcript)

    @property
    def buffer(self) -> str:
        assert self.repl.session is not None
        return self.repl.session.default_buffer.text

    def send(self, keys: str) -> None:
        self.inp.send_text(keys)  # type: ignore[attr-defined]

    async def line(self, text: str) -> None:
        """Type a line at a fresh prompt and press Enter."""
        await until(lambda: self.repl.prompt_ready.is_set(), what="the prompt")
        self.send(text + ENTER)
        await asyncio.sleep(0.05)

    async def shows(self, needle: str, timeout: float = 15.0) -> str:
        found: list[str] = []

        def hit() -> bool:
            found[:] = [x for x in self.transcript if needle in x]
            return bool(found)

        await until(hit, timeout, what=f"{needle!r} in the transcript; have:\n" + "\n".join(self.transcript[-15:]))
        return found[0]


@asynccontextmanager
async def repl_for(address: str, certs: Path, history: Path | None = None, **kw: object) -> AsyncIterator[Driver]:
    with create_pipe_input() as inp:
        repl = Repl(
            ConnectionSettings(address, str(certs)),
            history=history,
            input=inp,
            output=DummyOutput(),
            agents_refresh=0.3,
            **kw,
        )  # type: ignore[arg-type]
        task = asyncio.create_task(repl.run())
        d = Driver(repl, inp, task)
        try:
            await until(lambda: repl.prompt_ready.is_set() or task.done(), what="the first prompt")
            yield d
        finally:
            if not task.done():
                inp.send_text(CTRL_D)
                try:
                    await asyncio.wait_for(asyncio.shield(task), 10)
                except TimeoutError:
                    task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def connected(d: Driver) -> None:
    await until(lambda: d.repl.ctx.connected is True, what="the connection")


# ------------------------------------------------------------------ tests


async def test_tab_completes_types_actions_and_live_registry_types(mesh: Daemon, tmp_path: Path) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        d.send("/arch" + TAB)
        await until(lambda: d.buffer == "/architect", what="/arch<Tab> -> /architect")
        d.send(" cr" + TAB)
        await until(lambda: d.buffer == "/architect create", what="cr<Tab> -> create")
        d.send(CTRL_U + "/ta" + TAB)  # two candidates: the menu opens, Tab again takes the first
        await until(lambda: d.buffer in ("/ta", "/tasks", "/task"))
        d.send(CTRL_U)
        await until(lambda: d.buffer == "")
        # a type only the live registry knows
        link, runner = await start_agent(mesh, tmp_path, BuilderAgent(), "builder-1")
        try:
            await until(lambda: "builder" in d.repl.ctx.known_types(), what="the registry refresh")
            d.send("/bui" + TAB)
            await until(lambda: d.buffer == "/builder", what="/bui<Tab> -> /builder")
            d.send(" run make it" + ENTER)
            await d.shows("built: make it")
        finally:
            await stop_agent(link, runner)


async def test_history_is_written_and_recalled(mesh: Daemon, tmp_path: Path) -> None:
    hist = tmp_path / "hist" / "autogpt_history"
    async with repl_for(mesh.address, mesh.certs, history=hist) as d:
        await d.line('/echo run "remember me"')
        await d.shows("remember me")
    assert '+/echo run "remember me"' in hist.read_text()
    async with repl_for(mesh.address, mesh.certs, history=hist) as d:
        d.send(UP)
        await until(lambda: d.buffer == '/echo run "remember me"', what="Up recalls the last line")


def test_history_path_flag_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert history_path(str(tmp_path / "a" / "h")) == tmp_path / "a" / "h"
    assert (tmp_path / "a").is_dir()
    monkeypatch.setenv("ORCHGPT_CLI_HISTORY", str(tmp_path / "env_h"))
    assert history_path() == tmp_path / "env_h"
    monkeypatch.delenv("ORCHGPT_CLI_HISTORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert history_path() == tmp_path / "xdg" / "orchgpt" / "autogpt_history"


async def test_events_stream_above_the_prompt_while_typing(mesh: Daemon) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        await d.line('/echo run "one two three" -o delay=1 -o tokens=1')
        await d.shows("waiting 1s")
        d.send("/tas")  # typing, not submitted
        line = await d.shows("✓ succeeded")
        assert d.buffer == "/tas"  # the output came while the line was being typed
        assert line.startswith("[echo ")
        tagged = [x for x in d.transcript if x.startswith(line.split("]")[0] + "]")]
        assert any(x.endswith("one two three") for x in tagged)
        d.send("ks" + ENTER)
        await d.shows("1 task in this session")


async def test_several_tasks_at_once_are_marked_by_task(mesh: Daemon) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        await d.line("/echo run first -o delay=4")
        await d.shows("waiting 4s")
        await d.line("/echo run second")
        await d.shows("] second")
        assert d.repl.ctx.running(), "the slow task still runs while the quick one is done"
        await d.shows("] first")
        out = d.transcript
        i_second = next(i for i, x in enumerate(out) if x.endswith("] second"))
        i_first = next(i for i, x in enumerate(out) if x.endswith("] first"))
        assert i_second < i_first
        assert out[i_second].split("]")[0] != out[i_first].split("]")[0]  # each line says its task
        tags = {x.split("]")[0] for x in out if x.startswith("[echo ")}
        assert len(tags) == 2


async def test_ctrl_c_asks_then_cancels_the_foreground_task(mesh: Daemon) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        d.send(CTRL_C)
        await d.shows("nothing to cancel (Ctrl-D or /quit exits)")
        await d.line("/echo run sleepy -o delay=30")
        await d.shows("waiting 30s")
        view = d.repl.ctx.foreground()
        assert view is not None
        # Ctrl-C on a typed line only clears it
        d.send("/half typed")
        await until(lambda: d.buffer == "/half typed")
        d.send(CTRL_C)
        await until(lambda: d.buffer == "" and d.repl.prompt_ready.is_set())
        assert not any("cancel task" in x for x in d.transcript)
        # on an empty line it asks; "n" keeps the task
        d.send(CTRL_C)
        await until(
            lambda: (
                d.repl.question.startswith(f"cancel task [echo {view.short}] sleepy?") and d.repl.prompt_ready.is_set()
            ),
            what="the question",
        )
        d.send("n" + ENTER)
        await d.shows(f"task {view.short} goes on")
        assert not view.done.is_set()
        # asked again, "y" cancels it
        await until(lambda: not d.repl.question and d.repl.prompt_ready.is_set())
        d.send(CTRL_C)
        await until(lambda: bool(d.repl.question) and d.repl.prompt_ready.is_set(), what="the question")
        d.send("y" + ENTER)
        await d.shows("⊘ cancelled: cancelled by the user (Ctrl-C)")
        assert view.state == "cancelled"
        async with mesh.client() as c:
            task, _, _ = await asyncio.wait_for(c.get_task(view.task_id, with_events=False), 10)
        assert task.state == "cancelled"
        assert d.repl.ctx.running() == []


async def test_bad_lines_print_one_error_and_the_repl_goes_on(mesh: Daemon) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await d.line("/echo jump")
        await d.shows('error: unknown action "jump" for /echo: expected create, run, terminate or status')
        await d.line('/echo run "open')
        await d.shows('error: unbalanced " quote at column 11')
        await d.line("hello")
        await d.shows('error: not a command: "hello"')
        await d.line("/help")
        await d.shows("Agent commands")
        await d.shows("Ctrl-C cancels the running task")
        await d.line("/quit")
        assert await asyncio.wait_for(d.task, 10) == 0


async def test_y_n_covers_the_sub_tasks_of_the_task_too(mesh: Daemon, tmp_path: Path) -> None:
    """Seed 003's "y -N" (N continuous commands) holds for the whole task tree: sub-tasks of a
    task with approval on ask too, and the count the user gave covers their calls."""
    started = [await start_agent(mesh, tmp_path, AskingAgent(), f"asker-tree-{i}") for i in range(2)]
    try:
        async with repl_for(mesh.address, mesh.certs) as d:
            await connected(d)
            await until(lambda: "asker" in d.repl.ctx.known_types(), what="the registry refresh")
            await d.line("/asker run tree --approve -o calls=1 -o children=2")
            await until(lambda: "approve write_file for [asker " in plain(d.repl.message()), what="the question")
            d.send("y -3" + ENTER)  # this call and the next two: the two sub-tasks' calls
            await d.shows("approve:1 [approve:1] [approve:1]")
            assert sum("approved (y -N" in x for x in d.transcript) == 2
            assert plain(d.repl.message()) == "autogpt> "  # nothing else was asked
    finally:
        for link, runner in started:
            await stop_agent(link, runner)


async def test_toolbar_shows_connection_agents_and_tasks(mesh: Daemon) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        await d.line("/echo run busy -o delay=2")
        await d.shows("waiting 2s")
        await until(lambda: "1 busy" in toolbar_text(d))
        text = toolbar_text(d)
        assert f"orchgpt {mesh.address} ● connected" in text
        assert "tasks 1 running" in text and f"session {d.repl.ctx.session_id[:8]}" in text


def toolbar_text(d: Driver) -> str:
    return plain(d.repl.bottom_toolbar())


async def test_ctrl_d_exits_and_says_what_still_runs(mesh: Daemon) -> None:
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        await d.line("/echo run lingering -o delay=5")
        await d.shows("waiting 5s")
        d.send(CTRL_D)
        assert await asyncio.wait_for(d.task, 10) == 0
        await d.shows("1 task still running in the mesh")


async def test_reconnects_after_the_daemon_restarts(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory().start()
    port = daemon.port
    async with repl_for(daemon.address, daemon.certs) as d:
        await connected(d)
        await d.line('/echo run "survivor" -o delay=3')
        await d.shows("waiting 3s")
        daemon.kill()
        await d.shows(f"lost the orchestrator at 127.0.0.1:{port}; reconnecting...")
        await until(lambda: "○ disconnected, retrying" in toolbar_text(d))
        await asyncio.to_thread(daemon.start, port)
        await d.shows(f"reconnected to 127.0.0.1:{port}", timeout=20)
        line = await d.shows("✓ succeeded", timeout=30)  # the task was requeued and its stream resumed
        assert any(x.endswith("] survivor") for x in d.transcript)
        assert line.startswith("[echo ")
        assert "● connected" in toolbar_text(d)


async def test_exit_at_prompt_for_the_startup_benchmark(mesh: Daemon) -> None:
    with create_pipe_input() as inp:
        repl = Repl(
            ConnectionSettings(mesh.address, str(mesh.certs)), input=inp, output=DummyOutput(), exit_at_prompt=True
        )
        assert await asyncio.wait_for(repl.run(), 10) == 0
        assert repl.ctx._client is None  # it left before connecting


async def test_malformed_address_ends_the_repl_with_one_line(tmp_path: Path) -> None:
    init_dir(tmp_path / "certs")
    with create_pipe_input() as inp:
        repl = Repl(ConnectionSettings("nonsense", str(tmp_path / "certs")), input=inp, output=DummyOutput())
        with pytest.raises(CliError) as err:
            await asyncio.wait_for(repl.run(), 15)
    assert err.value.exit_code == 3
    assert str(err.value) == "malformed address 'nonsense': expected HOST:PORT, e.g. 127.0.0.1:8443"


# ------------------------------------------------------------------ approvals


class BuilderAgent(Agent):
    type = "builder"

    async def run(self, ctx: TaskContext) -> Outcome:
        return Outcome(output=f"built: {ctx.task.input}")


class AskingAgent(Agent):
    """Asks approval for `calls` tool calls, then (option `children`) delegates that many asker
    sub-tasks of one call each, one after another, and reports every answer."""

    type = "asker"

    async def run(self, ctx: TaskContext) -> Outcome:
        answers = []
        for i in range(int(ctx.task.options.get("calls", "1"))):
            r = await ctx.approve("write_file", json.dumps({"path": f"f{i}.txt"}), f"write f{i}.txt")
            answers.append(f"{r.decision}:{r.count}" + (f":{r.feedback}" if r.feedback else ""))
        for i in range(int(ctx.task.options.get("children", "0"))):
            sub = await ctx.delegate(
                Delegation("asker", f"child {i}", action=Action.RUN, options={"calls": "1"}, key=f"child-{i}")
            )
            answers.append(f"[{sub.output}]")
        return Outcome(output=" ".join(answers))


async def start_agent(mesh: Daemon, tmp_path: Path, agent: Agent, name: str) -> tuple[Link, asyncio.Task[None]]:
    issue(mesh.certs, name, "agent")
    link = Link(agent, name, mesh.address, paths_for(mesh.certs, name), tmp_path / f"ws-{name}")
    runner = asyncio.create_task(link.run())
    await asyncio.wait_for(link.connected.wait(), 15)
    return link, runner


async def stop_agent(link: Link, runner: asyncio.Task[None]) -> None:
    await link.stop(grace=1)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_approval_requests_are_answered_inline(mesh: Daemon, tmp_path: Path) -> None:
    link, runner = await start_agent(mesh, tmp_path, AskingAgent(), "asker-repl")
    try:
        async with repl_for(mesh.address, mesh.certs) as d:
            await connected(d)
            await until(lambda: "asker" in d.repl.ctx.known_types(), what="the registry refresh")
            await d.line("/asker run write files --approve -o calls=5")
            await d.shows("wants to run write_file: write f0.txt")
            await until(lambda: "approve write_file for [asker " in plain(d.repl.message()), what="the question")
            await until(lambda: "1 approval waiting" in toolbar_text(d))
            d.send("a 2" + ENTER)
            await d.shows("approve_next sent to task")
            await d.shows("runs write_file: approved (y -N, 0 more)")  # f1: the CLI keeps the count
            await until(lambda: d.repl.ctx.approvals is not None and d.repl.ctx.approvals.head() is not None)
            d.send("maybe" + ENTER)  # free text: feedback for the model
            await d.shows("feedback sent to task")
            await d.shows("write f2.txt")
            await until(lambda: d.repl.ctx.approvals is not None and d.repl.ctx.approvals.head() is not None)
            view = d.repl.ctx.foreground()
            assert view is not None
            await d.line(f"/approve {view.short} no thanks")
            await d.shows("feedback sent to task")
            await d.shows("write f4.txt")
            await until(lambda: d.repl.ctx.approvals is not None and d.repl.ctx.approvals.head() is not None)
            await d.line("/tasks")  # a slash line still runs as a command while a question waits
            await d.shows("1 task in this session")
            d.send("y" + ENTER)
            # the CLI keeps the "a 2" count (for sub-tasks too): the agent sees two single approvals
            await d.shows("approve:1 approve:1 feedback:1:maybe feedback:1:no thanks approve:1")
            assert plain(d.repl.message()) == "autogpt> "
            # seed 003: "'n' to exit program": the call is rejected and the task stops
            await d.line("/asker run write more --approve -o calls=2")
            await d.shows("write f0.txt")
            await until(lambda: d.repl.ctx.approvals is not None and d.repl.ctx.approvals.head() is not None)
            stopped = d.repl.ctx.foreground()
            assert stopped is not None and stopped is not view
            d.send("n" + ENTER)
            await d.shows("reject sent to task")
            await until(lambda: stopped.done.is_set(), what="the stopped task to end")
            assert stopped.state == "cancelled"
    finally:
        await stop_agent(link, runner)
