"""The CLI's workflow commands as a user runs them: `autogpt -c` against a real daemon and the
scripted model; the user_proxy's questions are answered by lines piped on stdin (one-shot mode),
with --json and in text; the session operations from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import Daemon
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.workflows import Speakers, assistant, write

pytestmark = pytest.mark.timeout(90)


def autogpt(d: Daemon, *commands: str, stdin: str = "", json_mode: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHGPT_ADDRESS": d.address, "ORCHGPT_CERTS": str(d.certs)}
    args = [sys.executable, "-m", "orchgpt_cli", *(["--json"] if json_mode else [])]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=80, env=env)


@pytest.fixture
def flow(daemon_factory, tmp_path: Path) -> Any:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "pair",
        f"""
name = "pair"
type = "groupchat"
description = "a coder and you"
agents = [{assistant("coder", "You are coder.", "writes the code")}, "user_proxy"]
max_rounds = 6
summary_method = "last"
""",
    )
    sp = Speakers({"coder": ["v1", "v2 with tests"]})
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf"), env=srv.env(api_key="test")).start()
        yield d, sp


def test_workflow_run_answers_the_user_proxy_from_piped_stdin(flow: Any) -> None:
    d, _sp = flow
    r = autogpt(
        d,
        "/workflows",
        "/workflow show pair",
        '/workflow run pair "write it"',
        "/session messages .",
        "/session clear .",
        stdin="please add tests\nexit\n",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    out = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    records = {o["type"]: o for o in out if "type" in o}
    assert [w["name"] for w in records["workflows"]["workflows"]] == ["pair"]
    assert records["workflow"]["workflow"]["speaker_selection"] == "round_robin"
    res = records["workflow_result"]
    assert [(t["speaker"], t["content"]) for t in res["transcript"]] == [
        ("coder", "v1"),
        ("user_proxy", "please add tests"),
        ("coder", "v2 with tests"),
        ("user_proxy", "exit"),
    ]
    assert res["summary"] == "v2 with tests" and res["stop_reason"] == "the user ended it"
    assert res["usage"]["agents"]["coder"]["gpt-4o-mini"]["total_tokens"] > 0
    # the questions went out as approval events, each turn's events labelled with its speaker
    asked = [o for o in out if o.get("kind") == "approval"]
    assert len(asked) == 2 and asked[0]["approval"]["question"]
    assert {o.get("agent_type") for o in out if o.get("kind") == "token"} == {"coder"}
    # the transcript is the session's messages: the task, four turns; then cleared
    msgs = records["messages"]["messages"]
    assert [m["speaker"] for m in msgs] == [
        "client:cli",
        "coder",
        "user_proxy",
        "coder",
        "user_proxy",
    ]
    assert records["session_cleared"]["deleted"] == 5


def test_workflow_run_in_text_ends_with_the_summary_and_a_usage_table(flow: Any) -> None:
    d, _sp = flow
    r = autogpt(d, '/workflow run pair "write it"', stdin="exit\n", json_mode=False)
    assert r.returncode == 0, r.stderr + r.stdout
    text = r.stdout
    assert "[coder" in text and "summary: v1" in text
    assert "AGENT" in text and "COMPLETION" in text and "coder" in text.split("AGENT", 1)[1]
    bad = autogpt(d, '/workflow run nope "x"', json_mode=False)
    assert bad.returncode != 0 and "no workflow 'nope'" in bad.stderr + bad.stdout
