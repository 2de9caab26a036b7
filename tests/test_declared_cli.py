"""The CLI treats a declared agent type like a built-in one (issue 13): /help and /agents list
it with its description, and Tab completes it, before any agent of it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mesh import Daemon
from tests.test_cli_repl import TAB, connected, repl_for, until

pytestmark = pytest.mark.timeout(60)

WRITER = """name = "writer"
description = "Writes a clear article from research notes"
system_prompt = "You are a technical writer."
tools = ["read_file", "write_file"]
"""


async def test_help_agents_and_tab_know_a_declared_type(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    adir = tmp_path / "agents.d"
    adir.mkdir()
    (adir / "writer.toml").write_text(WRITER)
    d: Daemon = daemon_factory("--no-spawn", "--agents-dir", str(adir)).start()
    async with repl_for(d.address, d.certs) as r:
        await connected(r)
        await until(lambda: "writer" in r.repl.ctx.known_types(), what="the declared types")
        r.send("/wri" + TAB)
        await until(lambda: r.buffer == "/writer", what="/wri<Tab> -> /writer")
        r.send("\x15")  # Ctrl-U
        await r.line("/help")
        await r.shows("declared: writer")
        await r.line("/help writer")
        await r.shows("Writes a clear article from research notes (declared)")
        await r.line("/agents")
        line = await r.shows("  writer")
        assert "Writes a clear article" in line
        await r.shows("declared, none running")
