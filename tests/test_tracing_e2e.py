"""OpenTelemetry traces across the mesh (docs/operations.md, "Traces"), as a user runs them:
a real daemon, its spawned architect agent (its own process) on the scripted model, the CLI as a
subprocess, all exporting OTLP/HTTP to a test collector that decodes the spans with
opentelemetry-proto. One trace must run from the CLI's command to the model calls and tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import Daemon
from tests.support.otlp_collector import OtlpCollector, Span
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.team_script import TeamScript
from tests.support.tools_path import path_without

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"


@pytest.fixture
def collector() -> Any:
    with OtlpCollector() as col:
        yield col


@pytest.fixture
def model() -> Any:
    with ScriptedOpenAI(responder=TeamScript(), models=(MODEL,)) as srv:
        yield srv


def autogpt(d: Daemon, command: str, env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    """The CLI of this checkout (`python -m cli` from the repository root), as a subprocess."""
    full = {**os.environ, "ORCHGPT_ADDRESS": d.address, "ORCHGPT_CERTS": str(d.certs), **env}
    r = subprocess.run(
        [sys.executable, "-m", "cli", "--json", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
    )
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return r.returncode, events, r.stderr


def by_name(spans: list[Span], prefix: str) -> list[Span]:
    return [s for s in spans if s.name.startswith(prefix)]


def one(spans: list[Span], prefix: str) -> Span:
    found = by_name(spans, prefix)
    assert len(found) == 1, (prefix, [s.name for s in spans])
    return found[0]


def test_one_trace_from_the_cli_through_the_daemon_to_the_agents_model_calls(
    daemon_factory, model, collector: OtlpCollector, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env = collector.env()
    hide = {"PATH": path_without(tmp_path / "bin", "mmdc")}  # a host renderer is not the point
    d: Daemon = daemon_factory("--heartbeat-interval", "2", env={**model.env(api_key="test"), **env, **hide}).start()
    code, events, err = autogpt(d, '/architect create "fastapi app" | python', env)
    assert code == 0, err
    result = events[-1]["result"]
    task_id = events[-1]["task_id"]

    def complete(spans: list[Span]) -> bool:
        names = {s.name for s in spans}
        return (
            {
                "autogpt architect create",
                "orchgpt.submit",
                "orchgpt.task architect",
                "orchgpt.run architect",
                "invoke_agent architect",
                f"chat {MODEL}",
            }
            <= names
            and any(n.startswith("execute_tool ") for n in names)
            and "orchgpt.store_result architect" in names
        )

    spans = collector.wait_for(complete, what="the command's spans from every process")
    cli = one(spans, "autogpt architect create")
    assert cli.parent_id == "" and cli.service == "autogpt"
    trace = cli.trace_id
    mine = [s for s in spans if s.trace_id == trace]
    # every span of this command, from three processes, is in the CLI's trace
    assert {s.service for s in mine} == {"autogpt", "orchgpt", "agentd"}
    assert len({s.trace_id for s in spans}) == 1, sorted({(s.trace_id, s.name) for s in spans})
    ids = {s.span_id: s for s in mine}

    def parent(s: Span) -> Span:
        assert s.parent_id in ids, f"{s.name}: its parent {s.parent_id} is not in the trace"
        return ids[s.parent_id]

    submit = one(mine, "orchgpt.submit")
    assert parent(submit) is cli and submit.service == "orchgpt"
    task = one(mine, "orchgpt.task architect")
    assert parent(task) is submit
    assert task.attributes["orchgpt.task.id"] == task_id
    assert task.attributes["orchgpt.task.state"] == "succeeded"
    queue = one(mine, "orchgpt.queue architect")
    run = one(mine, "orchgpt.run architect")
    assert parent(queue) is task and parent(run) is task
    assert queue.end_ns <= run.start_ns + 1_000_000  # the wait ends where the run starts
    assert parent(one(mine, "orchgpt.dispatch architect")) is run
    assert parent(one(mine, "orchgpt.store_result architect")) is task
    agent = one(mine, "invoke_agent architect")
    assert parent(agent) is run and agent.service == "agentd"
    assert agent.attributes["gen_ai.agent.name"] == "architect"
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["orchgpt.task.state"] == "succeeded"
    assert agent.attributes["gen_ai.usage.input_tokens"] == result["usage"]["prompt_tokens"]
    assert agent.attributes["gen_ai.conversation.id"] == task.attributes["gen_ai.conversation.id"]
    assert agent.attributes["gen_ai.conversation.id"]  # the session
    chats = by_name(mine, f"chat {MODEL}")
    assert chats and all(parent(c) is agent for c in chats)
    for c in chats:
        a = c.attributes
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == MODEL
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == model.port
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"]
        # no prompt or completion text unless the user opts in
        assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for k in a), a
    # the tokens the spans count are the tokens the task reports
    assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats) == (result["usage"]["prompt_tokens"])
    assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats) == (result["usage"]["completion_tokens"])
    tools = by_name(mine, "execute_tool ")
    assert all(parent(t) is agent for t in tools)
    assert all(t.attributes["gen_ai.tool.name"] == t.name.split(" ", 1)[1] for t in tools)

    # the log lines of the task lead to its trace: the daemon's and the agent's
    def lines(text: str, event: str) -> list[dict[str, Any]]:
        out = []
        for line in text.splitlines():
            if f'"{event}"' in line and task_id in line and line.startswith("{"):
                out.append(json.loads(line))
        return out

    agent_logs = "".join(p.read_text() for p in (d.data_dir / "logs").glob("*.log"))
    for text, event in (
        (d.log(), "task_accepted"),
        (d.log(), "task_finished"),
        (agent_logs, "task_done"),
    ):
        found = lines(text, event)
        assert found and all(x.get("trace_id") == trace for x in found), (event, found)
    # nothing of the prompt anywhere in the trace
    assert not any("fastapi app" in str(v) for s in mine for v in s.attributes.values())


def test_tracing_is_off_without_an_endpoint(daemon_factory, collector: OtlpCollector) -> None:  # type: ignore[no-untyped-def]
    """No endpoint configured: no process exports anything (the collector hears nothing)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    d: Daemon = daemon_factory().start()
    full = {
        **clean,
        "ORCHGPT_ADDRESS": d.address,
        "ORCHGPT_CERTS": str(d.certs),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    r = subprocess.run(
        [sys.executable, "-m", "cli", "--json", "-c", '/echo run "x"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
    )
    assert r.returncode == 0, r.stderr
    assert collector.requests == 0 and not collector.snapshot()
    assert "tracing_on" not in d.log()


def ancestors(s: Span, ids: dict[str, Span]) -> list[Span]:
    out = []
    while s.parent_id in ids:
        s = ids[s.parent_id]
        out.append(s)
    return out


@pytest.mark.timeout(120)
def test_a_manager_run_is_one_trace_with_its_sub_tasks_agents_model_and_tool_calls(
    daemon_factory, collector: OtlpCollector, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    team = TeamScript()
    team.plan = json.dumps(
        {
            "tasks": [
                {
                    "id": "design-system",
                    "agent": "architect",
                    "task": "Design the todo app",
                    "depends_on": [],
                },
                {
                    "id": "ui-design",
                    "agent": "designer",
                    "task": "Design the UI",
                    "depends_on": ["design-system"],
                },
            ]
        }
    )
    env = collector.env()
    with ScriptedOpenAI(responder=team, models=(MODEL,)) as srv:
        hide = {"PATH": path_without(tmp_path / "bin", "mmdc")}  # a host renderer: not the point
        d: Daemon = daemon_factory("--heartbeat-interval", "2", env={**srv.env(api_key="test"), **env, **hide}).start()
        code, _events, err = autogpt(d, '/manager create "todo app" | python', env)
    assert code == 0, err + d.log()[-3000:]

    def complete(spans: list[Span]) -> bool:
        names = {s.name for s in spans}
        return {
            "autogpt manager create",
            "invoke_agent manager",
            "invoke_agent architect",
            "invoke_agent designer",
            "orchgpt.task architect",
            "orchgpt.task designer",
            "orchgpt.store_result manager",
        } <= names

    spans = collector.wait_for(complete, 30, what="the manager's and its sub-tasks' spans")
    cli = one(spans, "autogpt manager create")
    assert {s.trace_id for s in spans} == {cli.trace_id}, "one trace for the whole command"
    ids = {s.span_id: s for s in spans}
    assert all(s.parent_id in ids for s in spans if s is not cli), [
        s.name for s in spans if s is not cli and s.parent_id not in ids
    ]
    manager = one(spans, "invoke_agent manager")
    for sub in ("architect", "designer"):
        task = one(spans, f"orchgpt.task {sub}")
        delegate = ids[task.parent_id]
        assert delegate.name == "orchgpt.delegate" and delegate.service == "orchgpt"
        assert manager in ancestors(delegate, ids)  # delegated from inside the manager's run
        assert task.attributes["orchgpt.task.parent_id"] == manager.attributes["orchgpt.task.id"]
        agent = one(spans, f"invoke_agent {sub}")
        assert ids[agent.parent_id].name == f"orchgpt.run {sub}"
        assert task in ancestors(agent, ids)
        below = [s for s in spans if agent in ancestors(s, ids)]
        chats = [s for s in below if s.name == f"chat {MODEL}"]
        assert chats and all(c.attributes["gen_ai.usage.input_tokens"] > 0 for c in chats)
        assert any(s.name == "execute_tool write_file" for s in below)
    # the manager's own planning call is a model call of the manager
    assert any(
        manager in ancestors(s, ids) and s.name == f"chat {MODEL}" and ids[s.parent_id] is manager for s in spans
    )


def test_an_unreachable_collector_neither_breaks_nor_stalls_the_cli(daemon) -> None:  # type: ignore[no-untyped-def]
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"}
    t0 = time.monotonic()
    assert autogpt(daemon, '/echo run "warm up"', {})[0] == 0  # the echo agent is spawned
    t1 = time.monotonic()
    assert autogpt(daemon, '/echo run "untraced"', {})[0] == 0
    t2 = time.monotonic()
    code, events, err = autogpt(daemon, '/echo run "still works"', env)
    t3 = time.monotonic()
    assert code == 0, err
    assert events[-1]["kind"] == "result" and events[-1]["result"]["output"] == "still works"
    # its last export gives up after 2 s (the SDK's default would retry for 10 s)
    assert (t3 - t2) - (t2 - t1) < 5, f"traced {t3 - t2:.1f}s, untraced {t2 - t1:.1f}s ({t1 - t0:.1f})"
