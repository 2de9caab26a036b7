"""A user_proxy's question in the REPL: shown above the prompt, the prompt turns into the question,
the next line is the answer as typed (even "n"), and an empty line passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchgpt_cli.render import plain

from agentd.agents.user_proxy import UserProxyAgent
from tests.support.mesh import Daemon
from tests.test_cli_repl import connected, repl_for, start_agent, stop_agent, until

pytestmark = pytest.mark.timeout(60)


async def test_a_question_is_answered_by_the_next_line(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mesh: Daemon = daemon_factory("--no-spawn").start()
    link, runner = await start_agent(mesh, tmp_path, UserProxyAgent(), "me")
    try:
        async with repl_for(mesh.address, mesh.certs) as d:
            await connected(d)
            await d.line('/user_proxy run "What is your name?"')
            await until(
                lambda: "What is your name?" in plain(d.repl.message()),
                what="the question as the prompt",
            )
            await d.shows("asks you:")
            await d.line("n")  # not a rejection: the answer
            await d.shows("answer 'n' sent to task")
            await d.shows("succeeded")
            assert any(x.strip().endswith("n") for x in d.transcript if "user_proxy" in x and "[" in x)
            await d.line('/user_proxy run "Anything to add?"')
            await until(lambda: "Anything to add?" in plain(d.repl.message()), what="the second question")
            await d.line("")  # an empty line passes
            await d.shows("answer '' sent to task")
    finally:
        await stop_agent(link, runner)


async def test_a_workflow_run_in_the_repl_leaves_the_prompt_free_for_its_questions(
    daemon_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "ask.toml").write_text('name = "ask"\ntype = "sequential"\nagents = ["user_proxy", "echo"]\n')
    mesh: Daemon = daemon_factory("--workflows-dir", str(wf)).start()
    async with repl_for(mesh.address, mesh.certs) as d:
        await connected(d)
        await d.line('/workflow run ask "say something"')
        await until(lambda: "Your reply" in plain(d.repl.message()), 30, what="the user_proxy's question")
        await d.line("hello from the prompt")
        await d.shows("workflow ask: 2 turns", timeout=30)
        await d.shows("summary: ")
        assert any("hello from the prompt" in x for x in d.transcript if "summary" in x)


def test_workflow_names_complete_after_workflows_listed() -> None:
    from orchgpt_cli.completion import CommandCompleter
    from orchgpt_cli.context import Context
    from orchgpt_cli.output import Output
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    ctx = Context(Output(), interactive=True)
    ctx.workflow_names = ["code-review", "research-and-write"]
    comp = CommandCompleter(ctx)

    def words(text: str) -> list[str]:
        return [c.text for c in comp.get_completions(Document(text), CompleteEvent())]

    assert words("/workflow r") == ["run"] and words("/workflow run co") == ["code-review"]
    assert words("/workflow show ") == ["code-review", "research-and-write"]
