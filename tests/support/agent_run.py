"""Running one agent on the scripted model server: Run (an agent's run() with its events in a
list), the srv fixture, write (a write_file tool call), and the architecture document the
backend tests hand over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.runtime import Agent, Outcome, TaskContext, agent_class
from agentd.settings import AgentSettings
from orchgpt.models import EventKind, Task, TaskEvent
from tests.support.scripted_openai import Response, ScriptedOpenAI, tool_call

TIMEOUT = 90

GOOD_DOC = """# Todo service

## Overview
A small HTTP API that stores todo items in memory.

## Components
- **api**: HTTP server (FastAPI) that validates requests and serves JSON.
- **store**: in-memory repository of todo items.

## Data model
- Todo: id (int), title (str), done (bool)

## Endpoints
| Method | Path | Request | Response | Description |
|---|---|---|---|---|
| GET | /todos | - | list of Todo | list the todos |
| POST | /todos | {title} | Todo | create a todo |
| GET | /health | - | {status} | liveness |
"""


class Run:
    def __init__(
        self,
        tmp_path: Path,
        srv: ScriptedOpenAI,
        agent_type: str,
        text_: str,
        options: dict[str, str] | None = None,
        **model_opts: Any,
    ) -> None:
        self.events: list[TaskEvent] = []
        self.settings = AgentSettings.for_endpoint(
            srv.base_url, api_key="sk-scripted", workspace_root=tmp_path / "ws", **model_opts
        )
        self.settings.sandbox_timeout_s = 60
        self.ws = tmp_path / "ws" / "task1"
        self.ws.mkdir(parents=True, exist_ok=True)
        task = Task(task_id="task1", agent_type=agent_type, input=text_, language="python", options=options or {})
        self.ctx = TaskContext(task, self.ws, f"{agent_type}-1", self.events.append, settings=self.settings)
        self.agent: Agent = agent_class(agent_type)(self.settings)

    async def __call__(self) -> Outcome:
        return await asyncio.wait_for(self.agent.run(self.ctx), TIMEOUT)

    def of(self, kind: EventKind) -> list[TaskEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as s:
        yield s


def write(path: str, content: str) -> Response:
    return tool_call("write_file", {"path": path, "content": content})
