"""The fill-in strategy (agentd.llm.strategies) outside the architect, and chosen by the profile."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from agentd.llm import LLM
from agentd.llm.profiles import PROFILES, ModelProfile
from agentd.llm.strategies import FillIn, FillInFailed, Section, for_profile
from agentd.llm.strategies.fill_in import WORKED_EXAMPLES
from agentd.runtime import TaskContext, agent_class
from agentd.settings import AgentSettings
from orchgpt.models import EventKind, Task, TaskEvent
from tests.support.scripted_openai import ScriptedOpenAI, last_text, prompt_text, route, text

pytestmark = pytest.mark.timeout(60)


def parse_file(line: str) -> str | None:
    m = re.match(r"^\s*-\s+([\w./-]+\.\w+)\s*$", line)
    return m.group(1) if m else None


# What another agent (a backend, say) could ask a model without tools: its files, one per line.
FILES: Section[str] = Section(
    "Files",
    "Files of {subject}:",
    (
        "- chat_server.py\n- chat_store.py",
        "- photo_upload.py\n- photo_store.py",
        "- recipe_web.py\n- recipe_search.py",
    ),
    parse_file,
    lambda f: f,
    2,
    "bullets '- name.ext'",
)


def ctx_for(tmp_path: Path, settings: AgentSettings | None = None) -> tuple[TaskContext, list[TaskEvent]]:
    events: list[TaskEvent] = []
    ws = tmp_path / "ws" / "t"
    ws.mkdir(parents=True, exist_ok=True)
    ctx = TaskContext(
        Task(task_id="t", agent_type="architect", input="fastapi app"),
        ws,
        "a",
        events.append,
        settings=settings,
    )
    return ctx, events


async def test_another_section_uses_the_same_worked_examples_and_echo_rules(tmp_path: Path) -> None:
    answers = iter(
        [
            text("- chat_server.py\n- photo_store.py"),  # the examples copied: no answer
            text("- todo_api.py\n- todo_db.py\n- todo_api.py\nthat is all"),
        ]
    )
    with ScriptedOpenAI(responder=lambda req: next(answers)) as srv:
        ctx, events = ctx_for(tmp_path)
        async with LLM(AgentSettings.for_endpoint(srv.base_url, api_key="k", model="m")) as llm:
            files, model = await asyncio.wait_for(FillIn().ask(llm, ctx, FILES, ["a todo app"]), 30)
    assert files == ["todo_api.py", "todo_db.py"] and model == "m"
    first, second = srv.chat_requests
    assert [m["content"] for m in first["messages"][::2]] == [f"Files of {e.project}:" for e in WORKED_EXAMPLES] + [
        "Files of a todo app:"
    ]
    assert "tools" not in first and first["max_tokens"] == 200 and first["temperature"] == 0.2
    assert second["messages"] == first["messages"]  # the same prompt sampled again first
    steps = [e.text for e in events if e.kind == EventKind.STEP]
    assert (
        "fill-in: the Files answer is unusable: the answer repeated the prompt or its examples "
        "(2 line(s)) instead of answering" in steps
    )


async def test_a_section_that_fails_names_itself(tmp_path: Path) -> None:
    with ScriptedOpenAI(responder=lambda req: text("no idea")) as srv:
        ctx, _ = ctx_for(tmp_path)
        async with LLM(AgentSettings.for_endpoint(srv.base_url, api_key="k", model="m")) as llm:
            with pytest.raises(FillInFailed, match=r"could not fill in the Files section \(2 tries"):
                await FillIn(tries=2).ask(llm, ctx, FILES, ["a todo app"])
    assert len(srv.chat_requests) == 2


def test_the_profile_chooses_the_strategy() -> None:
    assert isinstance(for_profile(ModelProfile()), FillIn)
    assert for_profile(ModelProfile(text_strategy="none")) is None


def _architect(tmp_path: Path, srv: ScriptedOpenAI) -> tuple[Any, TaskContext, list[TaskEvent]]:
    settings = AgentSettings.for_endpoint(srv.base_url, api_key="sk-scripted", workspace_root=tmp_path / "ws")
    settings.max_steps = 1
    ctx, events = ctx_for(tmp_path, settings)
    return agent_class("architect")(settings), ctx, events


async def test_a_profile_without_a_text_strategy_skips_the_fill_in(tmp_path: Path) -> None:
    with ScriptedOpenAI(responder=lambda req: text("I cannot use tools."), models=["no-fill-model"]) as srv:
        PROFILES.learn(srv.base_url, "no-fill-model", text_strategy="none")
        agent, ctx, events = _architect(tmp_path, srv)
        out = await asyncio.wait_for(agent.run(ctx), 30)
        reqs = srv.chat_requests
    assert not out.ok and out.data["fill_in"] == "false"
    assert out.error.startswith("the architecture is incomplete after 1 round(s): ARCHITECTURE.md was not written")
    assert all("write_file" in prompt_text(r) for r in reqs)  # no section was asked
    assert "tools unavailable: filling in the document section by section" not in [e.text for e in events]


async def test_the_known_small_model_goes_compat_and_folded_from_the_first_request(
    tmp_path: Path,
) -> None:
    """A server that names its model gemma-3-270m: no request with tools or a system message."""
    responder = route(
        (
            "Components of a fastapi app:",
            text("- api server: serves the API\n- todo store: keeps todos"),
        ),
        ("Data model of a fastapi app:", text("- Todo: id (int), title (str)")),
        ("HTTP endpoints for the entity", text("GET /todos - list the todos")),
        default=text("I will write it."),
    )
    with ScriptedOpenAI(responder=responder, models=["gemma-3-270m"], reject_tools=True, reject_system=True) as srv:
        agent, ctx, _events = _architect(tmp_path, srv)
        out = await asyncio.wait_for(agent.run(ctx), 30)
        reqs = srv.chat_requests
    assert out.ok, out.error
    assert out.data["fill_in"] == "true"
    assert all("tools" not in r and all(m["role"] != "system" for m in r["messages"]) for r in reqs)
    assert [last_text(r) for r in reqs[-3:]] == [
        "Components of a fastapi app:",
        "Data model of a fastapi app:",
        "HTTP endpoints for the entity Todo:",
    ]
