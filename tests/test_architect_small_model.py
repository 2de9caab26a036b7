"""The architect with a model that cannot use tools: the section-by-section fill-in.

Scripted models over real HTTP (tests.support.scripted_openai) drive the architect
through the tool loop into the fill-in; the last test runs the real bundled
gemma-3-270m (marked ``llm``, skipped when the local-model extra is missing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.agents._architect_diagram import dot_from, mermaid_from
from agentd.agents._architect_sections import COMPONENTS, DATA_MODEL, ENDPOINTS, Component, Endpoint
from agentd.agents.architect import check_document, check_dot, check_mermaid
from agentd.llm.strategies.fill_in import entity_subject, read_answer
from agentd.runtime import Agent, Outcome, TaskContext, agent_class
from agentd.settings import AgentSettings
from orchgpt import localmodel
from orchgpt.models import EventKind, Task, TaskEvent
from tests.support.scripted_openai import (
    Response,
    ScriptedOpenAI,
    last_text,
    prompt_text,
    route,
    text,
)

TIMEOUT = 60
# A compat-mode tool call whose JSON is cut off: the model "tries" but never gets a call right.
BROKEN_CALL = '```json\n{"tool": "write_file", "arguments": {"path": "ARCHITECTURE.md", "content": "# Todo\n```'
COMPONENTS_ANSWER = "- api server: serves the HTTP API (FastAPI)\n- todo store: keeps the todos (SQLite)\n"
DATA_MODEL_ANSWER = "- Todo: id (int), title (str), done (bool)\n- User: id (int), name (str)\n"
ENDPOINTS_ANSWER = "GET /todos - list the todos\nPOST /todos - create a todo\nDELETE /todos/{id} - delete a todo\n"


class Run:
    def __init__(
        self,
        tmp_path: Path,
        srv: ScriptedOpenAI,
        text_: str = "fastapi app",
        options: dict[str, str] | None = None,
        max_steps: int = 2,
        **model_opts: Any,
    ) -> None:
        self.events: list[TaskEvent] = []
        self.settings = AgentSettings.for_endpoint(
            srv.base_url, api_key="sk-scripted", workspace_root=tmp_path / "ws", **model_opts
        )
        self.settings.max_steps = max_steps
        self.ws = tmp_path / "ws" / "task1"
        self.ws.mkdir(parents=True, exist_ok=True)
        task = Task(task_id="task1", agent_type="architect", input=text_, options=options or {})
        self.ctx = TaskContext(task, self.ws, "architect-1", self.events.append, settings=self.settings)
        self.agent: Agent = agent_class("architect")(self.settings)

    async def __call__(self) -> Outcome:
        return await asyncio.wait_for(self.agent.run(self.ctx), TIMEOUT)

    @property
    def steps(self) -> list[TaskEvent]:
        return [e for e in self.events if e.kind == EventKind.STEP]


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as s:
        yield s


def small_model(*, endpoints: Response | str = text(ENDPOINTS_ANSWER)) -> Any:
    """Never a valid tool call; answers the section prompts."""
    return route(
        ("Components of a fastapi app:", text(COMPONENTS_ANSWER)),
        ("Data model of a fastapi app:", text(DATA_MODEL_ANSWER)),
        ("HTTP endpoints for the entity", endpoints),
        default=text(BROKEN_CALL),
    )


# ---------------------------------------------------------------- reading the answers


def test_answers_are_read_line_by_line_and_echoes_rejected() -> None:
    msgs = COMPONENTS.messages("a fastapi app", 0)
    # Rambling after the list, a repeated component and end-of-turn junk are cut off.
    ans = read_answer(
        COMPONENTS,
        "- fastapi server: receives the requests\n- fastapi store: stores the data łę\n"
        "- fastapi server: sends the data\nISSUES:\n- later: ignored",
        msgs,
    )
    assert [(c.name, c.description, c.kind) for c in ans.items] == [
        ("fastapi server", "receives the requests", "api"),
        ("fastapi store", "stores the data", "storage"),
    ]
    assert ans.problem == ""
    # The prompt echoed back (questions and examples) is no answer, nor is an example barely changed.
    echo = "\n".join(m["content"] for m in msgs)
    assert "repeated the prompt" in read_answer(COMPONENTS, echo, msgs).problem
    assert (
        "repeated the prompt"
        in read_answer(COMPONENTS, "- photo store: keeps the images\n- chat store: keeps the message", msgs).problem
    )
    ep_msgs = ENDPOINTS.messages("Todo", 0)
    assert "repeated the prompt" in read_answer(ENDPOINTS, "GET /chat - list the chats", ep_msgs).problem
    # ... nor a line about the examples' subject matter, unless the project is about it.
    assert "repeated the prompt" in read_answer(ENDPOINTS, "GET /chat - start a chat", ep_msgs).problem
    mixed = read_answer(
        COMPONENTS, "- fastapi photo store: keeps files\n- fastapi api: serves\n- fastapi db: keeps the images", msgs
    )
    assert [c.name for c in mixed.items] == ["fastapi api", "fastapi db"] and mixed.echoed == 1
    gallery = COMPONENTS.messages("a photo gallery", 0)
    assert len(read_answer(COMPONENTS, "- photo web: shows the photos\n- photo db: keeps them", gallery).items) == 2
    # Too little is named as such.
    one = read_answer(COMPONENTS, "- api: serves requests", msgs)
    assert one.problem.startswith("1 usable line(s), at least 2 needed")
    assert read_answer(COMPONENTS, "", msgs).problem == "the answer was empty"
    # The pattern applied to the subject counts, even with the example's fields.
    dm = read_answer(
        DATA_MODEL,
        "- fastapi: id (int), title (str), created_at (datetime) mendatang",
        DATA_MODEL.messages("a fastapi app", 0),
    )
    assert [(e.name, e.fields) for e in dm.items] == [("fastapi", "id (int), title (str), created_at (datetime)")]
    eps = read_answer(ENDPOINTS, "GET /todos - list\n| POST | /todos | create |\nPATCH /todos/{id}\nfoo", ep_msgs)
    assert [(e.method, e.path, e.description) for e in eps.items] == [
        ("GET", "/todos", "list"),
        ("POST", "/todos", "create"),
        ("PATCH", "/todos/{id}", ""),
    ]


def test_endpoints_are_asked_for_the_entity_written_like_the_examples() -> None:
    assert [entity_subject(n) for n in ("fastapi", "FastAPI", "TodoItem", "todo item")] == [
        "Fastapi",
        "Fastapi",
        "TodoItem",
        "Todo item",
    ]


def test_diagram_is_derived_from_components_and_endpoints() -> None:
    comps = [
        Component("web ui", "pages for people", "client"),
        Component("api server", "serves HTTP", "api"),
        Component("mailer", "sends mail", "other"),
        Component("todo db", "keeps todos", "storage"),
    ]
    eps = [Endpoint("GET", "/todos"), Endpoint("POST", "/todos")]
    src = mermaid_from(comps, eps)
    assert check_mermaid(src) == []
    assert src.splitlines() == [
        "flowchart LR",
        '    web_ui(["web ui"])',
        '    api_server["api server"]',
        '    mailer["mailer"]',
        '    todo_db[("todo db")]',
        '    web_ui -->|"GET /todos, POST /todos"| api_server',
        "    api_server --> mailer",
        "    api_server --> todo_db",
    ]
    # Without a client component the client is the one the endpoints imply; without an API
    # component the first other component takes the requests. Node ids avoid Mermaid keywords.
    src2 = mermaid_from([Component("end", "finishes jobs"), Component("cache", "keeps results", "storage")], eps)
    assert 'client(["Client"])' in src2 and '    client -->|"GET /todos, POST /todos"| c_end' in src2
    assert "c_end --> cache" in src2 and check_mermaid(src2) == []
    dot = dot_from(comps, eps)
    assert check_dot(dot) == [] and "api_server -> todo_db;" in dot and "shape=cylinder" in dot


def test_a_title_naming_the_api_does_not_hide_the_endpoints_section() -> None:
    doc = (
        "# Todo API\n\n## Components\n- api: serves\n- db: keeps\n\n## Data model\n- Todo: id (int)\n\n"
        "## API\n- GET /todos - list the todos\n"
    )
    assert check_document(doc) == []


# ---------------------------------------------------------------- the architect, scripted


async def test_model_without_tool_use_fills_in_the_document(tmp_path: Path) -> None:
    with ScriptedOpenAI(responder=small_model()) as srv:
        run = Run(tmp_path, srv, tool_mode="compat", compat_retries=1)
        out = await run()
    assert out.ok, out.error
    doc = (run.ws / "ARCHITECTURE.md").read_text()
    assert check_document(doc) == []
    assert "## Components\n- api server: serves the HTTP API (FastAPI)\n- todo store: keeps the todos (SQLite)\n" in doc
    assert "## Data model\n- Todo: id (int), title (str), done (bool)\n- User: id (int), name (str)\n" in doc
    assert "| GET | /todos | list the todos |\n| POST | /todos | create a todo |" in doc
    assert "| DELETE | /todos/{id} | delete a todo |" in doc
    diagram = (run.ws / "architecture.mmd").read_text()
    assert check_mermaid(diagram) == []
    assert 'api_server["api server"]' in diagram and 'todo_store[("todo store")]' in diagram
    assert '    client -->|"GET /todos, POST /todos, DELETE /todos/{id}"| api_server' in diagram
    assert "    api_server --> todo_store" in diagram
    # Stated as derived, in the result and in a step.
    rendered = ", rendered to architecture.svg" if out.data["rendered"] else ""  # with mmdc installed
    assert out.output == (
        "wrote ARCHITECTURE.md (2 components, 3 endpoints) section by section (the model could "
        "not use the tools) and derived architecture.mmd from its components and endpoints" + rendered
    )
    assert out.data["fill_in"] == "true" and out.data["diagram_source"].startswith("derived")
    steps = [e.text for e in run.steps]
    assert "tools unavailable: filling in the document section by section" in steps
    assert any(
        s.startswith("diagram: derived architecture.mmd from the 2 components and 3 endpoints") and "deterministic" in s
        for s in steps
    )
    assert steps[-1] == "check: document and diagram are complete"
    assert {"ARCHITECTURE.md", "architecture.mmd"} <= set(run.ctx.artifacts)
    # One tool round only (2 steps x (1 try + 1 compat retry)), then three plain completions:
    # no tools, short, cool, the project named, the endpoints asked for the model's first entity.
    reqs = srv.chat_requests
    assert len(reqs) == 4 + 3
    tool_round, fill = reqs[:4], reqs[4:]
    assert all("write_file" in prompt_text(r) for r in tool_round)
    assert [last_text(r) for r in fill] == [
        "Components of a fastapi app:",
        "Data model of a fastapi app:",
        "HTTP endpoints for the entity Todo:",
    ]
    for r in fill:
        assert "tools" not in r and r["max_tokens"] == 200 and r["temperature"] == 0.2
        assert "write_file" not in prompt_text(r)
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * 3 + ["user"]
    assert run.ctx.usage.calls == 7


async def test_model_echoing_every_prompt_fails_naming_the_section(tmp_path: Path) -> None:
    with ScriptedOpenAI(responder=lambda req: text(prompt_text(req))) as srv:
        run = Run(tmp_path, srv, tool_mode="compat", compat_retries=0, max_steps=1)
        out = await run()
        reqs = srv.chat_requests
    assert not out.ok
    assert out.error.startswith(
        "the architecture is incomplete after 1 round(s) and the section-by-section fill-in: "
        "the model did not write the files with the tools, and the model could not fill "
        "in the Components section (3 tries; last: the answer repeated the prompt"
    )
    assert out.data["fill_in"] == "true"
    assert not (run.ws / "ARCHITECTURE.md").exists() and not (run.ws / "architecture.mmd").exists()
    # Bounded: one tool step, then the Components section three times (the same prompt sampled
    # again, then the examples rotated), nothing more.
    assert len(reqs) == 4
    assert {last_text(r) for r in reqs[1:]} == {"Components of a fastapi app:"}
    assert reqs[1]["messages"] == reqs[2]["messages"] and reqs[2]["messages"][0] != reqs[3]["messages"][0]
    steps = [e.text for e in run.steps]
    assert "tools unavailable: filling in the document section by section" in steps
    assert sum("the Components answer is unusable: the answer repeated the prompt" in s for s in steps) == 3


async def test_echoed_endpoints_fail_naming_the_endpoints_after_trying_another_entity(tmp_path: Path) -> None:
    echo: Any = lambda req: text(prompt_text(req))  # noqa: E731
    with ScriptedOpenAI(responder=small_model(endpoints=echo)) as srv:
        run = Run(tmp_path, srv, tool_mode="compat", compat_retries=0, max_steps=1)
        out = await run()
        asked = [last_text(r) for r in srv.chat_requests if "HTTP endpoints" in last_text(r)]
    assert not out.ok and "could not fill in the Endpoints section" in out.error
    assert asked == [
        "HTTP endpoints for the entity Todo:",
        "HTTP endpoints for the entity User:",
        "HTTP endpoints for the entity User:",
    ]
    assert not (run.ws / "ARCHITECTURE.md").exists()


async def test_document_written_with_tools_gets_a_derived_diagram(tmp_path: Path, srv: ScriptedOpenAI) -> None:
    """A capable model keeps the tool path: its document stays; only the missing diagram is derived."""
    from tests.support.scripted_openai import tool_call

    doc = (
        "# Todo service\n\n## Components\n- **api**: HTTP server (FastAPI)\n- **store**: in-memory todos\n\n"
        "## Data model\n- Todo: id (int), title (str)\n\n## Endpoints\n| Method | Path |\n|---|---|\n"
        "| GET | /todos |\n"
    )
    srv.push(tool_call("write_file", {"path": "ARCHITECTURE.md", "content": doc}), text("Done."), text("Done, really."))
    run = Run(tmp_path, srv, options={"tries": "2"}, max_steps=4)
    out = await run()
    assert out.ok, out.error
    assert (run.ws / "ARCHITECTURE.md").read_text() == doc
    assert (run.ws / "architecture.mmd").read_text() == (
        'flowchart LR\n    client(["Client"])\n    api["api"]\n    store[("store")]\n'
        '    client -->|"GET /todos"| api\n    api --> store\n'
    )
    assert out.data["fill_in"] == "false" and out.data["diagram_source"].startswith("derived")
    assert out.output.startswith("wrote ARCHITECTURE.md (2 components, 1 endpoints) and derived architecture.mmd")
    assert len(srv.chat_requests) == 3  # two tool rounds, no fill-in completion
    assert "tools unavailable: filling in the document section by section" not in [e.text for e in run.steps]


# ---------------------------------------------------------------- the real bundled model

needs_model = pytest.mark.skipif(
    bool(localmodel.missing_modules()),
    reason=f"needs the local model extra ({localmodel.INSTALL_HINT})",
)


@pytest.mark.llm
@needs_model
@pytest.mark.timeout(300)
async def test_real_small_model_takes_the_fill_in_path(tmp_path: Path) -> None:
    """gemma-3-270m cannot call tools: the fill-in runs and ends cleanly (success, or a failure
    naming the section); the model is nondeterministic, so success itself is not asserted."""
    srv = localmodel.LocalModelServer(log_dir=tmp_path, n_ctx=4096, startup_timeout=120)
    await asyncio.wait_for(srv.start(), 150)
    try:
        env = {
            **srv.env(),
            "ORCHGPT_LLM_TIMEOUT": "60",
            "ORCHGPT_LLM_BACKOFF": "0.1",
            "ORCHGPT_WORKSPACE_ROOT": str(tmp_path / "ws"),
            # One short tool round: the fill-in is what this test is about.
            "ORCHGPT_MAX_STEPS": "1",
            "ORCHGPT_MAX_OUTPUT_TOKENS": "128",
        }
        settings = AgentSettings.from_env("architect", env)
        ws = tmp_path / "ws" / "t"
        ws.mkdir(parents=True)
        events: list[TaskEvent] = []
        ctx = TaskContext(
            Task(task_id="t", agent_type="architect", input="fastapi app"), ws, "a", events.append, settings=settings
        )
        t0 = time.monotonic()
        out = await asyncio.wait_for(agent_class("architect")(settings).run(ctx), 150)  # 40-150 s seen
        elapsed = time.monotonic() - t0
    finally:
        await asyncio.wait_for(srv.stop(), 30)
    steps = [e.text for e in events if e.kind == EventKind.STEP]
    print(f"\nreal model: ok={out.ok} in {elapsed:.0f}s, {ctx.usage.calls} calls: {out.output or out.error}")
    assert "tools unavailable: filling in the document section by section" in steps
    assert any(s.startswith("fill-in: asking for the Components of a fastapi app") for s in steps)
    if out.ok:
        doc = (ws / "ARCHITECTURE.md").read_text()
        print(doc, (ws / "architecture.mmd").read_text(), sep="\n")
        assert check_document(doc) == [] and check_mermaid((ws / "architecture.mmd").read_text()) == []
        assert out.data["diagram_source"].startswith("derived")
    else:
        assert any(
            f"could not fill in the {name} section" in out.error for name in ("Components", "Data model", "Endpoints")
        ), out.error
