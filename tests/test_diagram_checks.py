"""Issue 18, architect: the diagram is parsed (not trusted) and matched against the document:
every component the document names is a node and every node a component; a diagram that omits
one goes back to the model, and the result carries the components and render checks."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agentd.agents._architect_diagram import dot_from, mermaid_from
from agentd.agents._architect_sections import parse_components
from agentd.agents.architect import ArchitectAgent
from agentd.checks.diagram import component_match, diagram_check, dot_nodes, mermaid_nodes
from agentd.runtime import Task, TaskContext
from agentd.settings import AgentSettings
from orchgpt.checks import checks_of
from tests.support.scripted_openai import ScriptedOpenAI, text, tool_call
from tests.test_architect_backend import GOOD_DIAGRAM, GOOD_DOC

pytestmark = pytest.mark.timeout(90)


def test_mermaid_and_dot_nodes_are_parsed() -> None:
    nodes = {(n.ident, n.label) for n in mermaid_nodes(GOOD_DIAGRAM)}
    assert nodes == {("client", "Client"), ("api", "API server"), ("store", "Todo store")}
    edges = "flowchart TD\n  a -->|GET /x| b\n  b -.-> c\n  subgraph s\n  end\n"
    assert {n.ident for n in mermaid_nodes(edges)} == {"a", "b", "c"}
    seq = "sequenceDiagram\n  participant W as Web page\n  actor U\n  W->>U: hi\n"
    assert {(n.ident, n.label) for n in mermaid_nodes(seq)} >= {("W", "Web page"), ("U", "")}
    dot = 'digraph g {\n  rankdir=LR;\n  api [label="API server"];\n  api -> db;\n}\n'
    assert {(n.ident, n.label) for n in dot_nodes(dot)} == {("api", "API server"), ("db", "")}


def test_components_and_nodes_must_agree() -> None:
    nodes = mermaid_nodes(GOOD_DIAGRAM)
    assert component_match(["api", "store"], nodes) == ([], [])
    assert component_match(["api", "store", "mailer"], nodes) == (["mailer"], [])
    missing, extra = component_match(["api"], nodes)
    assert missing == [] and extra == ["Todo store"]
    check, problems = diagram_check("architecture.mmd", GOOD_DIAGRAM, ["api", "store", "cache"])
    assert check.outcome == "failed" and "no node for the component 'cache'" in check.detail
    assert problems == ["architecture.mmd has no node for the component 'cache' of the document"]


def test_the_derived_diagrams_always_match_their_document() -> None:
    body = GOOD_DOC.split("## Components")[1].split("##")[0]
    comps = parse_components(body)
    for name, src in (("a.mmd", mermaid_from(comps, [])), ("a.dot", dot_from(comps, []))):
        check, _ = diagram_check(name, src, [c.name for c in comps])
        assert check.outcome == "passed", (name, check.detail)


def test_a_diagram_missing_a_component_goes_back_to_the_model(tmp_path: Path) -> None:
    three = GOOD_DOC.replace("- **store**", "- **cache**: Redis cache of hot todo lists.\n- **store**")
    fixed = GOOD_DIAGRAM + "    api --> cache[(Redis cache)]\n"
    with ScriptedOpenAI() as srv:
        srv.push(
            tool_call("write_file", {"path": "ARCHITECTURE.md", "content": three}),
            tool_call("write_file", {"path": "architecture.mmd", "content": GOOD_DIAGRAM}),
            text("Done."),
            tool_call("write_file", {"path": "architecture.mmd", "content": fixed}),
            text("Fixed."),
        )
        ws = tmp_path / "ws" / "t1"
        ws.mkdir(parents=True)
        settings = AgentSettings.for_endpoint(srv.base_url, api_key="k", workspace_root=tmp_path / "ws")
        ctx = TaskContext(
            Task(task_id="t1", agent_type="architect", input="todo api"),
            ws,
            "architect-1",
            lambda e: None,
            settings=settings,
        )
        out = asyncio.run(asyncio.wait_for(ArchitectAgent(settings).run(ctx), 80))
        feedback = srv.chat_requests[3]["messages"][-1]["content"]
    assert "architecture.mmd has no node for the component 'cache'" in feedback
    assert out.ok, out.error
    checks = {c.name: c for c in checks_of(out)}
    assert checks["components"].outcome == "passed"
    assert checks["render"].outcome == ("passed" if shutil.which("mmdc") else "skipped")
