"""The daemon's further metrics (orchgpt/metrics_more.py, docs/operations.md): envelopes by type,
store latency by operation, events dropped for slow watchers, and the model and tool counters the
agents report in their heartbeats. Scraped over HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from orchgpt.mesh import Mesh
from orchgpt.metrics import MeshMetrics
from orchgpt.metrics_more import AgentReports, MoreMetrics
from orchgpt.models import Action, Command, EventKind, TaskEvent, TaskState
from orchgpt.store import open_store
from tests.support.mesh import Daemon, await_for
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.team_script import TeamScript
from tests.support.tools_path import path_without
from tests.test_metrics import run_task, samples, scrape, value

pytestmark = pytest.mark.timeout(60)


def metrics_daemon(
    daemon_factory: Any, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[Daemon, int]:
    port_file = tmp_path / "metrics-port"
    d: Daemon = daemon_factory(
        "--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file), *args, env=env
    ).start()
    return d, int(port_file.read_text())


async def test_envelopes_and_store_operations_are_counted(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d, port = metrics_daemon(daemon_factory, tmp_path)
    async with d.client() as c:
        for i in range(3):
            final = await run_task(c, Command("echo", Action.RUN, f"hello {i}"))
            assert final.result.state == TaskState.SUCCEEDED
    ss = samples(scrape(port)[1])
    # one RUN out and one REPLY in per task, on the echo agent's stream
    assert value(ss, "orchgpt_envelopes_out_total", type="RUN") == 3
    assert value(ss, "orchgpt_envelopes_in_total", type="REPLY") == 3
    assert value(ss, "orchgpt_envelopes_in_total", type="REGISTER") == 1
    assert value(ss, "orchgpt_envelopes_out_total", type="REGISTERED") == 1
    assert (value(ss, "orchgpt_envelopes_in_total", type="TASK_EVENT") or 0) >= 3
    # every task is created once in the store, and saved as its state changes
    assert value(ss, "orchgpt_store_seconds_count", operation="create_task") == 3
    assert value(ss, "orchgpt_store_seconds_bucket", operation="create_task", le="+Inf") == 3
    # at least twice each (assigned, finished); the routine RUNNING row rides with the next flush
    assert (value(ss, "orchgpt_store_seconds_count", operation="save_task") or 0) >= 6
    assert (value(ss, "orchgpt_store_seconds_sum", operation="append_events") or 0) > 0
    assert value(ss, "orchgpt_events_dropped_total") == 0


def test_events_a_slow_watcher_misses_are_counted() -> None:
    mesh = Mesh(open_store("memory:"), ["echo"], spawner=None)
    m = MeshMetrics(mesh)
    m.registry.register(MoreMetrics(mesh, str, m.agent_type))

    class Slow:
        def __init__(self) -> None:
            self.closed = ""

        def deliver(self, ev: TaskEvent) -> bool:
            return False  # its buffer is full

        def close(self, reason: str) -> None:
            self.closed = reason

    fast, slow, slow_all = MeshMetrics(mesh), Slow(), Slow()
    mesh.subscribe(fast, "t1")
    mesh.subscribe(slow, "t1")
    mesh.subscribe(slow_all)
    mesh.fanout.publish(TaskEvent("t1", EventKind.LOG, text="one"))
    mesh.fanout.publish(TaskEvent("t1", EventKind.LOG, text="two"))  # both are gone by now
    assert "too slow" in slow.closed and "too slow" in slow_all.closed
    ss = samples(generate_latest(m.registry).decode())
    assert value(ss, "orchgpt_events_dropped_total") == 2


def test_agent_reports_count_increases_and_restarts() -> None:
    r = AgentReports()
    r.report("a1", "architect", (2, 100, 20, 3, 1))
    r.report("a1", "architect", (5, 250, 50, 3, 1))  # grew
    r.report("a1", "architect", (1, 10, 2, 0, 0))  # the agent restarted: counts from 0 again
    r.report("a2", "architect", (1, 1, 1, 1, 0))
    assert r.totals[("architect", "llm_calls")] == 5 + 1 + 1
    assert r.totals[("architect", "llm_input_tokens")] == 250 + 10 + 1
    assert r.totals[("architect", "tool_errors")] == 1


def test_agents_report_their_model_and_tool_counters_in_heartbeats(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A (spawned) agent's model requests, tokens and tool calls reach /metrics through its
    heartbeats, whether or not a task has finished."""
    import asyncio

    with ScriptedOpenAI(responder=TeamScript(), models=("gpt-4o-mini",)) as srv:
        hide = {"PATH": path_without(tmp_path / "bin", "mmdc")}  # a host renderer: not the point
        d, port = metrics_daemon(daemon_factory, tmp_path, env={**srv.env(api_key="test"), **hide})

        async def go() -> Any:
            async with d.client(timeout=30) as c:
                return await run_task(
                    c,
                    Command("architect", Action.CREATE, "fastapi app", language="python"),
                    timeout=45,
                )

        final = asyncio.run(go())
        assert final.result.state == TaskState.SUCCEEDED, final.result.error
        usage = final.result.usage
        calls = len(srv.chat_requests)
        assert calls > 0

        def reported() -> bool:
            ss = samples(scrape(port)[1])
            return value(ss, "orchgpt_agent_llm_calls_total", agent_type="architect") == calls

        asyncio.run(await_for(reported, 20, what="the agent's heartbeat with its counters"))
        ss = samples(scrape(port)[1])
        assert value(ss, "orchgpt_agent_llm_input_tokens_total", agent_type="architect") == usage.prompt_tokens
        assert value(ss, "orchgpt_agent_llm_output_tokens_total", agent_type="architect") == usage.completion_tokens
        assert (value(ss, "orchgpt_agent_tool_calls_total", agent_type="architect") or 0) >= 1
        assert (value(ss, "orchgpt_envelopes_in_total", type="HEARTBEAT") or 0) >= 1
