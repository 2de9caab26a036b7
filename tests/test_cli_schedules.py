"""The CLI's /schedule and /schedules: parsing both target forms, and a real daemon end to end
(the worktree's CLI as a subprocess: `python -m cli`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import ParseError
from cli.schedules import parse_add
from orchgpt.models import Action
from tests.support.mesh import Daemon, wait_for

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


def test_parse_agent_command_target() -> None:
    cron, tz, catch_up, cmd = parse_add(
        [
            "* * * * * */5",
            "--tz",
            "Europe/Paris",
            "--catch-up=skip",
            "/architect",
            "create",
            "fastapi app",
            "|",
            "python",
            "-o",
            "k=v",
        ],
        [],
    )
    assert (cron, tz, catch_up) == ("* * * * * */5", "Europe/Paris", "skip")
    assert (cmd.agent_type, cmd.action, cmd.input, cmd.language) == (
        "architect",
        Action.CREATE,
        "fastapi app",
        "python",
    )
    assert cmd.options == {"k": "v"}
    _, _, _, aliased = parse_add(["*/5 * * * *", "/arch", "create", "x | y"], [])
    assert aliased.agent_type == "architect" and aliased.input == "x | y"


def test_parse_graph_target() -> None:
    _, tz, catch_up, cmd = parse_add(["0 9 * * 1-5", "g-42", '{"input": {"topic": "cats"}}'], [])
    assert (tz, catch_up) == ("", "")
    assert (cmd.agent_type, cmd.action, cmd.options) == ("graph", Action.RUN, {"graph_id": "g-42"})
    assert json.loads(cmd.input) == {"input": {"topic": "cats"}}
    assert parse_add(["0 9 * * *", "g-1"], [])[3].input == "{}"


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "needs a cron expression"),
        (["*/5", "/echo", "run", "x"], "is not a cron expression"),
        (["* * * * *"], "what should run"),
        (["* * * * *", "--catch-up", "twice", "/echo", "run", "x"], "expected once or skip"),
        (["* * * * *", "--every", "2", "/echo", "run", "x"], "unknown option '--every'"),
        (["* * * * *", "g1", "{not json"], "the graph input is not JSON"),
        (["* * * * *", "/nosuch", "run", "x"], 'unknown command or agent "/nosuch"'),
        (["* * * * *", "/echo", "fly", "x"], 'unknown action "fly"'),
    ],
)
def test_parse_errors_name_the_problem(args: list[str], words: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_add(args, [])
    assert words in str(e.value)


def cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update({"ORCHGPT_ADDRESS": d.address, "ORCHGPT_CERTS": str(d.certs), "PYTHONPATH": str(ROOT)})
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=d.workdir,
    )


def test_schedule_commands_end_to_end(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory().start()
    r = cli(d, "--json", "-c", "/schedule add '* * * * * */2' /echo run \"from the cli\"")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.splitlines()[-1])["schedule"]
    sid = s["schedule_id"]
    assert s["command"]["agent_type"] == "echo" and s["cron"] == "* * * * * */2"

    def shown() -> str:
        out = cli(d, "-c", f"/schedule show {sid[:8]}")
        assert out.returncode == 0, out.stderr
        return out.stdout

    wait_for(lambda: f"{sid}-" in shown() and "submitted" in shown(), 20, 0.5, "a run in the history")
    text = shown()
    assert "history" in text and "on_time" in text and '/echo run "from the cli"' in text
    listed = cli(d, "-c", "/schedules")
    assert listed.returncode == 0 and sid[:8] in listed.stdout and "active" in listed.stdout
    assert "NEXT RUN" in listed.stdout and "1 schedule" in listed.stdout
    paused = cli(d, "-c", f"/schedule pause {sid[:8]}")
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert "paused" in cli(d, "-c", "/schedules").stdout
    assert "active" in cli(d, "-c", f"/schedule resume {sid[:8]}").stdout
    bad = cli(d, "-c", "/schedule add '61 * * * *' /echo run x")
    assert bad.returncode != 0 and "cron: invalid expression '61 * * * *'" in bad.stderr + bad.stdout
    gone = cli(d, "-c", f"/schedule delete {sid}")
    assert gone.returncode == 0 and "deleted" in gone.stdout
    again = cli(d, "-c", f"/schedule show {sid}")
    assert again.returncode != 0 and "no schedule" in again.stderr + again.stdout
