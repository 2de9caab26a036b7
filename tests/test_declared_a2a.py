"""Issue 20 in a declared agent's file: an ``[a2a]`` table makes the type a front for an external
A2A agent (a2a-sdk's own server, tests/support/a2a_upper.py); the daemon runs its proxy, and a
reload that removes the file stops it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from orchgpt.agent_defs import AgentDefError, load_dir
from orchgpt.models import Action, Command
from tests.support.a2a_calls import start_upper
from tests.support.mesh import Daemon, await_for, wait_for

pytestmark = pytest.mark.timeout(90)


def upper_toml(url: str) -> str:
    return f'name = "upper"\ndescription = "Upper-cases its input (external A2A agent)"\n\n[a2a]\nurl = "{url}"\n'


async def test_a_declared_type_fronts_an_external_a2a_agent(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upper, url = start_upper(tmp_path)
    adir = tmp_path / "agents.d"
    adir.mkdir()
    (adir / "upper.toml").write_text(upper_toml(url))
    d: Daemon = daemon_factory("--agents-dir", str(adir)).start()
    try:
        async with d.client() as mesh:
            assert "upper" in await mesh.declared_types()

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 30, what="the daemon's proxy for the declared A2A type")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "hello"))]
            assert events[-1].result is not None and events[-1].result.output == "HELLO"
            # the file goes, a reload stops the proxy
            [pid] = [json.loads(x)["pid"] for x in d.log().splitlines() if '"a2a_proxy_started"' in x]
            (adir / "upper.toml").unlink()
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "agents_reloaded" in d.log(), 10, what="the reload")

            def gone() -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                return False

            wait_for(gone, 15, what="the proxy to stop")
            assert "upper" not in await mesh.declared_types()
    finally:
        upper.kill()
        upper.wait(5)


def test_an_a2a_type_takes_no_tools(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(upper_toml("http://h:1") + '\n[mcp.x]\nurl = "http://h/mcp"\n')
    with pytest.raises(AgentDefError, match=r"x\.toml: a2a: the type runs on the external A2A agent"):
        load_dir(tmp_path)


async def test_a_declared_type_is_an_a2a_agent_with_its_description(
    daemon_factory,
    certs: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from tests.support.a2a_calls import A2A_ARGS, Caller, a2a_url, tls

    adir = tmp_path / "agents.d"
    adir.mkdir()
    (adir / "critic.toml").write_text(
        'name = "critic"\ndescription = "Finds the weak spots of a plan"\nsystem_prompt = "You criticise."\n'
    )
    d: Daemon = daemon_factory(*A2A_ARGS, "--agents-dir", str(adir)).start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:  # no critic agent runs yet: the card comes from the declared type
        body = (await alice.http.get(f"{alice.base}/critic/.well-known/agent-card.json")).json()
        assert body["name"] == "critic" and body["description"] == "Finds the weak spots of a plan"
    finally:
        await alice.close()
