"""The issue's "Done when", as a user runs it: `autogpt -c '/workflow run code-review "a function
that parses ISO dates"'` against a real daemon started with the shipped examples
(``--agents-dir examples/agents --workflows-dir examples/workflows``) and the scripted model.
coder, reviewer and tester are the declared types of examples/agents, spawned locally from
their definitions; the group chat picks its speakers with the model (``auto``), ends on the
reviewer's LGTM, and the run ends with the summary and the usage table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import Daemon
from tests.support.scripted_openai import (
    Response,
    ScriptedOpenAI,
    has_tool_result,
    prompt_text,
    system_text,
    text,
    tool_call,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
TASK = "a function that parses ISO dates"
TURN_RE = re.compile(r"This is turn (\d+) of at most (\d+)\. You are ([\w-]+)\b")
PART_RE = re.compile(r"You are ([\w-]+) \(.*\)\. Do your part of the task\.")  # sequential
CODE = "from datetime import datetime\n\n\ndef parse_iso(s):\n    return datetime.fromisoformat(s)\n"


class CodeReview:
    """The model of the code-review chat: the coder writes iso.py with write_file, the reviewer
    finds a problem, the tester reports, the coder fixes it (and says LGTM itself, which must
    not end the chat: the example has ``terminated_by = ["reviewer"]``), the reviewer says
    LGTM. The
    selector picks the speakers in that order; the summariser sums up."""

    SPEAKERS = ["reviewer", "tester", "coder", "reviewer"]

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (turn, speaker, the agent's system prompt, the turn's prompt)
        self.turns: list[tuple[int, str, str, str]] = []
        self.max_rounds = 0

    def __call__(self, req: dict[str, Any]) -> Response:
        sys_, prompt = system_text(req), prompt_text(req)
        with self.lock:
            if "choose the next speaker" in sys_:  # by the number of messages so far
                said = len(re.findall(r"^\[[\w-]+\]: ", prompt, re.MULTILINE))
                return text(self.SPEAKERS[min(said, len(self.SPEAKERS)) - 1])
            if "summarise the conversation" in sys_:
                return text("parse_iso in iso.py parses ISO dates; reviewed and tested")
            part = PART_RE.search(prompt)
            if part is not None:  # research-and-write
                return text(f"the {part.group(1)}'s part")
            m = TURN_RE.search(prompt)
            if m is None:
                return text("?")
            turn, who = int(m.group(1)), m.group(3)
            self.max_rounds = int(m.group(2))
            if not has_tool_result(req):
                self.turns.append((turn, who, sys_, prompt))
            if who == "coder" and turn == 1:
                if not has_tool_result(req):
                    return tool_call("write_file", {"path": "iso.py", "content": CODE})
                return text("Wrote parse_iso in iso.py.")
            if who == "coder":
                return text("Fixed: a trailing Z is accepted as UTC. LGTM from my side.")
            if who == "reviewer":
                return text("1. a trailing Z is not accepted" if turn < 4 else "Looks right. LGTM")
            return text("tests: 3 passed, 1 failed (a trailing Z)")


def autogpt(d: Daemon, pkgs: Path, *commands: str, json_mode: bool) -> subprocess.CompletedProcess[str]:
    """The CLI of this checkout (``pkgs`` holds ``orchgpt_cli``, a link to its cli/)."""
    path = os.pathsep.join([str(pkgs), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "ORCHGPT_ADDRESS": d.address,
        "ORCHGPT_CERTS": str(d.certs),
        "PYTHONPATH": path,
    }
    args = [sys.executable, "-m", "orchgpt_cli", *(["--json"] if json_mode else [])]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, input="", capture_output=True, text=True, timeout=100, env=env)


@pytest.fixture
def daemon(daemon_factory: Any, tmp_path: Path) -> Any:
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    (pkgs / "orchgpt_cli").symlink_to(ROOT / "cli", target_is_directory=True)
    model = CodeReview()
    with ScriptedOpenAI(responder=model, models=("gpt-4o-mini",)) as srv:
        d: Daemon = daemon_factory(
            "--agents-dir",
            str(ROOT / "examples" / "agents"),
            "--workflows-dir",
            str(ROOT / "examples" / "workflows"),
            env=srv.env(api_key="test"),
        ).start()
        yield d, model, pkgs


def test_code_review_example_streams_each_speaker_and_ends_with_summary_and_usage(
    daemon: Any,
) -> None:
    d, model, pkgs = daemon
    r = autogpt(
        d,
        pkgs,
        "/workflows",
        "/workflow show code-review",
        f'/workflow run code-review "{TASK}"',
        json_mode=True,
    )
    assert r.returncode == 0, r.stderr + r.stdout + d.log()[-4000:]
    out = [json.loads(line) for line in r.stdout.splitlines() if line.strip().startswith("{")]
    res = next(o for o in out if o.get("type") == "workflow_result")
    listed = next(o for o in out if o.get("type") == "workflows")
    assert [w["name"] for w in listed["workflows"]] == ["code-review", "research-and-write"]
    shown = next(o for o in out if o.get("type") == "workflow")["workflow"]
    assert shown["terminated_by"] == ["reviewer"] and shown["speaker_selection"] == "auto"
    # the group chat: the speakers the selector picked, ended by the reviewer's LGTM
    assert [t["speaker"] for t in res["transcript"]] == [
        "coder",
        "reviewer",
        "tester",
        "coder",
        "reviewer",
    ]
    assert res["stop_reason"] == "reviewer said LGTM"
    assert res["summary"] == "parse_iso in iso.py parses ISO dates; reviewed and tested"
    # each turn ran the declared type, with the system prompt of its file
    prompts = {who: s for _n, who, s, _p in model.turns}
    assert "careful software engineer" in prompts["coder"]
    assert "meticulous code reviewer" in prompts["reviewer"]
    assert "You are a tester" in prompts["tester"]
    assert [n for n, _w, _s, _p in model.turns] == [1, 2, 3, 4, 5]
    # only the reviewer is told the termination phrase, and only its LGTM ends the chat
    told = {who for _n, who, _s, p in model.turns if "end your message with LGTM" in p}
    assert told == {"reviewer"}
    for who in ("coder", "reviewer", "tester"):  # spawned by the daemon on this host
        assert f'"agent_id": "local-{who}-' in d.log()
    # every speaker's turn streamed, labelled with the speaker
    streamed = {o.get("agent_type") for o in out if o.get("kind") == "token"}
    assert {"coder", "reviewer", "tester"} <= streamed
    # the coder's tool call wrote the file in the workflow's workspace
    steps = [o for o in out if o.get("kind") == "step"]
    assert any("write_file" in json.dumps(s) for s in steps)
    # the usage summary: per agent and model, with a total cost
    usage = res["usage"]
    for who in ("coder", "reviewer", "tester"):
        assert usage["agents"][who]["gpt-4o-mini"]["total_tokens"] > 0
    assert "total_cost" in usage["total"] and usage["start_time"] and usage["end_time"]

    # the same in text, as a user reads it: labelled turns, the summary, the usage table
    r = autogpt(
        d,
        pkgs,
        "/workflow show code-review",
        f'/workflow run code-review "{TASK}"',
        '/workflow run research-and-write "how HTTP/3 differs from HTTP/2"',
        json_mode=False,
    )
    assert r.returncode == 0, r.stderr + r.stdout + d.log()[-4000:]
    out = r.stdout
    if os.environ.get("SHOW"):
        print(out)
    assert re.search(r"terminated_by +reviewer\n", out) and "workflow code-review (groupchat)" in out
    for who in ("coder", "reviewer", "tester"):
        assert f"[{who}" in out, out
    assert "summary: parse_iso in iso.py parses ISO dates; reviewed and tested" in out
    table = out.split("AGENT", 1)[1]
    assert "COMPLETION" in out and all(w in table for w in ("coder", "reviewer", "tester"))
    # the README's second example: the pipeline's speakers, in order, then its summary
    rw = out.split("workflow code-review: 5 turns", 1)[1]
    labels = [who for who in ("[researcher", "[outliner", "[writer") if who in rw]
    assert labels == ["[researcher", "[outliner", "[writer"], rw
    assert rw.index("[researcher") < rw.index("[outliner") < rw.index("[writer")
    assert "summary: the writer's part" in rw
