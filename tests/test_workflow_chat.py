"""Group chats against the scripted model: ``auto`` speaker selection (the model picks, through an
``assistant`` sub-task) ending on the termination phrase, a chat stopped at ``max_rounds``, and a
user_proxy participant whose turns the user answers through the approval path (client API)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import Daemon
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.workflows import Speakers, assistant, run, write

pytestmark = pytest.mark.timeout(90)


def start(daemon_factory: Any, tmp_path: Path, srv: ScriptedOpenAI) -> Daemon:
    d: Daemon = daemon_factory("--workflows-dir", str(tmp_path / "wf"), env=srv.env(api_key="test"))
    return d.start()


def turns(result: Any) -> list[tuple[str, str]]:
    return [(e["speaker"], e["content"]) for e in json.loads(result.data["transcript"])]


CODER = assistant("coder", "You are coder.", "writes the code")
REVIEWER = assistant("reviewer", "You are reviewer.", "reviews the code and ends the chat when it is good")
TESTER = assistant("tester", "You are tester.", "writes tests")


def test_auto_selection_ends_on_the_termination_phrase(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "review",
        f"""
name = "review"
type = "groupchat"
agents = [{CODER}, {REVIEWER}, {TESTER}]
speaker_selection = "auto"
max_rounds = 8
termination = "APPROVED"
summary_method = "last"
""",
    )
    sp = Speakers(
        {
            "coder": ["def parse(s): ..."],
            "tester": ["test_parse passes"],
            "reviewer": ["Looks correct. APPROVED"],
        },
        select=["tester", "The reviewer should speak: reviewer"],
    )
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d = start(daemon_factory, tmp_path, srv)
        _events, result = asyncio.run(run(d, "review", "parse ISO dates"))
        select_prompts = [r for r in srv.chat_requests if "choose the next speaker" in str(r["messages"][0])]
    assert result.state == "succeeded", result.error
    assert turns(result) == [
        ("coder", "def parse(s): ..."),
        ("tester", "test_parse passes"),
        ("reviewer", "Looks correct. APPROVED"),
    ]
    assert result.data["stop_reason"] == "reviewer said APPROVED"
    assert result.output == "Looks correct."  # the last message without the phrase
    assert [c[0] for c in sp.calls] == ["coder", "select", "tester", "select", "reviewer"]
    # the selector saw the participants' descriptions and the conversation
    assert "reviews the code" in str(select_prompts[0]["messages"]) and "def parse(s)" in str(select_prompts[0])
    usage = json.loads(result.data["usage_summary"])
    assert {"coder", "tester", "reviewer", "speaker_selection"} <= set(usage["agents"])


def test_a_chat_stops_at_max_rounds(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "talk",
        f"""
name = "talk"
type = "groupchat"
agents = [{CODER}, {REVIEWER}]
max_rounds = 3
summary_method = "none"
""",
    )
    sp = Speakers({"coder": ["draft 1", "draft 2"], "reviewer": ["not yet"]})
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d = start(daemon_factory, tmp_path, srv)
        _events, result = asyncio.run(run(d, "talk", "write it"))
    assert result.state == "succeeded", result.error
    assert turns(result) == [("coder", "draft 1"), ("reviewer", "not yet"), ("coder", "draft 2")]
    assert result.data["stop_reason"] == "max_rounds (3) reached"
    assert sp.calls == [("coder", 1), ("reviewer", 2), ("coder", 3)]
    assert result.data["summary"] == "" and "no summary" in result.output


def test_a_user_proxy_is_answered_through_the_approval_path(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "pair",
        f"""
name = "pair"
type = "groupchat"
agents = [{CODER}, "user_proxy"]
max_rounds = 6
summary_method = "last"
""",
    )
    sp = Speakers({"coder": ["v1", "v2 with tests"]})
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d = start(daemon_factory, tmp_path, srv)
        events, result = asyncio.run(run(d, "pair", "write it", answers=["please add tests", "exit"]))
        second = [r for r in srv.chat_requests if "You are coder." in str(r["messages"][0])][1]
    assert result.state == "succeeded", result.error
    assert turns(result) == [
        ("coder", "v1"),
        ("user_proxy", "please add tests"),
        ("coder", "v2 with tests"),
        ("user_proxy", "exit"),
    ]
    assert result.data["stop_reason"] == "the user ended it" and result.output == "v2 with tests"
    assert "[user_proxy]: please add tests" in second["messages"][-1]["content"]
    questions = [e.approval for e in events if e.kind == "approval"]
    assert len(questions) == 2 and all(q is not None and q.question for q in questions)
    assert "coder said: v1" in questions[0].question  # type: ignore[union-attr]


def test_manual_selection_and_a_user_asked_only_at_the_end(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "wf",
        "steer",
        f"""
name = "steer"
type = "groupchat"
agents = [{CODER}, {REVIEWER}, {{name = "me", type = "user_proxy", human_input_mode = "terminate"}}]
speaker_selection = "manual"
max_rounds = 2
""",
    )
    sp = Speakers({"coder": ["v1", "v2 TERMINATE"], "reviewer": ["r1"]})
    with ScriptedOpenAI(responder=sp, models=("gpt-4o-mini",)) as srv:
        d = start(daemon_factory, tmp_path, srv)
        answers = [
            "reviewer",
            "one more thing",
            "coder",
            "",
        ]  # the choice by name; "" ends the chat
        events, result = asyncio.run(run(d, "steer", "write it", answers=answers))
    assert result.state == "succeeded", result.error
    assert turns(result) == [
        ("coder", "v1"),
        ("reviewer", "r1"),
        ("me", "one more thing"),
        ("coder", "v2 TERMINATE"),
    ]
    assert result.data["stop_reason"] == "coder said TERMINATE" and result.output == "v2"
    asked = [e.approval for e in events if e.kind == "approval" and e.approval is not None]
    assert [a.choices for a in asked] == [["coder", "reviewer"], [], ["coder", "reviewer"], []]
    assert "max_rounds (2) reached" in asked[1].question and "coder said TERMINATE" in asked[3].question
    assert not any(c[0] == "select" for c in sp.calls)  # the user chose: no model call for it
