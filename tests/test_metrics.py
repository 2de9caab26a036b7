"""Prometheus metrics (`orchgpt serve --metrics-listen`, docs/operations.md): a real daemon runs
echo tasks, /metrics is scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchgpt.config import load_settings
from orchgpt.errors import ConfigError
from orchgpt.mesh import Mesh
from orchgpt.metrics import MAX_MODELS, MeshMetrics
from orchgpt.models import (
    Action,
    Command,
    EventKind,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
)
from orchgpt.store import open_store
from tests.support.mesh import Daemon, await_for, pids_matching

pytestmark = pytest.mark.timeout(60)


def metrics_daemon(daemon_factory: Any, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Any, int]:
    """A started daemon with its metrics endpoint on a free port: (daemon, port)."""
    port_file = tmp_path / "metrics-port"
    args = ("--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file))
    d = daemon_factory(*args, env=env).start()
    return d, int(port_file.read_text())


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name + sorted labels -> value, from the text format as prometheus-client parses it."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(ss: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    return ss.get((name, tuple(sorted(labels.items()))))


async def run_task(client, cmd: Command, timeout: float = 30):  # type: ignore[no-untyped-def]
    events = []

    async def go() -> None:
        async for ev in client.submit(cmd):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events[-1]


async def test_metrics_count_the_tasks_a_daemon_ran(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port_file = tmp_path / "metrics-port"
    d: Daemon = daemon_factory("--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file)).start()
    port = int(port_file.read_text())
    assert port > 0
    # before any task: the families are there, counting nothing
    status, text = scrape(port)
    assert status == 200
    ss = samples(text)
    assert value(ss, "orchgpt_tasks_in_state", state="queued") == 0
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="succeeded") is None
    async with d.client() as c:
        for i in range(3):
            final = await run_task(c, Command("echo", Action.RUN, f"hello {i}"))
            assert final.result.state == TaskState.SUCCEEDED
        final = await run_task(c, Command("echo", Action.RUN, "no", options={"fail": "x"}))
        assert final.result.state == TaskState.FAILED
    status, text = scrape(port)
    assert status == 200
    ss = samples(text)
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="succeeded") == 3
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="failed") == 1
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="submitted") == 4
    for st in ("queued", "assigned", "running"):
        assert value(ss, "orchgpt_tasks_in_state", state=st) == 0
    assert value(ss, "orchgpt_task_queue_seconds_count", agent_type="echo") == 4
    assert value(ss, "orchgpt_task_run_seconds_count", agent_type="echo") == 4
    assert value(ss, "orchgpt_task_run_seconds_bucket", agent_type="echo", le="+Inf") == 4
    assert value(ss, "orchgpt_agents", agent_type="echo", state="idle") == 1
    assert value(ss, "orchgpt_events_total", kind="result") == 4
    assert value(ss, "orchgpt_tasks_requeued_total") == 0
    assert value(ss, "orchgpt_local_agent_starts_total", agent_type="echo") == 1
    assert value(ss, "orchgpt_local_agent_crashes_total", agent_type="echo") is None
    # the exact line of the "done when"
    assert 'orchgpt_tasks_total{agent_type="echo",state="succeeded"} 3.0' in text
    # only /metrics; a bad request does not take the daemon down
    assert scrape(port, "/nope")[0] == 404
    with __import__("socket").create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"garbage\r\n\r\n")
        s.recv(100)
    assert scrape(port)[0] == 200
    assert d.proc is not None and d.proc.poll() is None
    assert "metrics_serving" in d.log()


async def test_metrics_are_off_by_default(daemon: Daemon) -> None:
    async with daemon.client() as c:
        await run_task(c, Command("echo", Action.RUN, "hi"))
    assert "metrics_serving" not in daemon.log()


def test_metrics_listen_setting() -> None:
    assert load_settings({}).metrics_listen == ""
    assert load_settings({"metrics_listen": "9464"}).metrics_listen == "127.0.0.1:9464"
    assert load_settings({"metrics_listen": ":9464"}).metrics_listen == "127.0.0.1:9464"
    assert load_settings({"metrics_listen": "0.0.0.0:9464"}).metrics_listen == "0.0.0.0:9464"
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_settings({"metrics_listen": "host:notaport"})


def test_llm_usage_is_counted_by_agent_type_and_model_with_bounded_models() -> None:
    mesh = Mesh(open_store("memory:"), ["echo"], spawner=None)
    m = MeshMetrics(mesh)
    mesh.subscribe(m)

    def result(task_id: str, model: str, cost: float = 0.01) -> None:
        r = TaskResult(
            task_id,
            TaskState.SUCCEEDED,
            agent_type="architect",
            usage=Usage(prompt_tokens=100, completion_tokens=20, cost_usd=cost, model=model, calls=2),
        )
        # as the mesh publishes it when an agent's (possibly remote) REPLY settles a task
        mesh.fanout.publish(TaskEvent(task_id, EventKind.RESULT, state=r.state, result=r))

    result("t1", "gpt-4o-mini")
    result("t2", "gpt-4o-mini")
    for i in range(MAX_MODELS + 10):
        result(f"m{i}", f"model-{i}", cost=0.0)
    ss = samples(__import__("prometheus_client").generate_latest(m.registry).decode())
    assert value(ss, "orchgpt_llm_tokens_total", agent_type="architect", model="gpt-4o-mini", kind="input") == 200
    assert value(ss, "orchgpt_llm_tokens_total", agent_type="architect", model="gpt-4o-mini", kind="output") == 40
    assert value(ss, "orchgpt_llm_calls_total", agent_type="architect", model="gpt-4o-mini") == 4
    assert value(ss, "orchgpt_llm_cost_usd_total", agent_type="architect", model="gpt-4o-mini") == pytest.approx(0.02)
    models = {dict(k[1])["model"] for k in ss if k[0] == "orchgpt_llm_tokens_total"}
    assert len(models) == MAX_MODELS + 1 and "other" in models
    assert value(ss, "orchgpt_llm_tokens_total", agent_type="architect", model="other", kind="input") == 11 * 100


async def test_a_crashed_local_agent_and_its_requeued_task_are_counted(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port_file = tmp_path / "metrics-port"
    d: Daemon = daemon_factory("--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file)).start()
    port = int(port_file.read_text())
    async with d.client() as c:
        events: list = []

        async def go() -> None:
            async for ev in c.submit(Command("echo", Action.RUN, "again", options={"delay": "1"})):
                events.append(ev)

        runner = asyncio.create_task(go())
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), 20, what="running")
        ss = samples(scrape(port)[1])
        assert value(ss, "orchgpt_tasks_in_state", state="running") == 1
        assert value(ss, "orchgpt_agents", agent_type="echo", state="busy") == 1
        assert value(ss, "orchgpt_agent_slots", agent_type="echo", kind="running") == 1
        assert value(ss, "orchgpt_agent_slots", agent_type="echo", kind="total") == 1  # (one slot: the default)
        [agent] = await c.list_agents()
        [pid] = pids_matching(f"--name {agent.agent_id}")
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(runner, 40)
    assert events[-1].state == TaskState.SUCCEEDED
    ss = samples(scrape(port)[1])
    assert value(ss, "orchgpt_local_agent_crashes_total", agent_type="echo") == 1
    # the restart, and maybe a fresh agent the requeued task asked for meanwhile
    assert (value(ss, "orchgpt_local_agent_starts_total", agent_type="echo") or 0) >= 2
    assert value(ss, "orchgpt_tasks_requeued_total") == 1
    assert value(ss, "orchgpt_task_queue_seconds_count", agent_type="echo") == 2  # it waited twice
    assert value(ss, "orchgpt_task_run_seconds_count", agent_type="echo") == 1
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="submitted") == 1
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="succeeded") == 1


def test_a_metrics_port_in_use_is_a_clear_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        d: Daemon = daemon_factory("--metrics-listen", f"127.0.0.1:{taken}")
        with pytest.raises(
            RuntimeError,
            match=f"cannot serve metrics on 127.0.0.1:{taken} "
            r"\(metrics_listen\)",
        ):
            d.start()


async def test_a_remote_agents_model_usage_is_counted(
    daemon_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    agents: list,
) -> None:
    from tests.support.mesh import start_agent
    from tests.support.scripted_openai import ScriptedOpenAI
    from tests.support.team_script import TeamScript

    port_file = tmp_path / "metrics-port"
    with ScriptedOpenAI(responder=TeamScript(), models=("gpt-4o-mini",)) as model:
        d: Daemon = daemon_factory(
            "--no-spawn", "--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file)
        ).start()
        port = int(port_file.read_text())
        # its own process and certificate, connected over the mesh as any remote agent is
        agents.append(start_agent(d, "arch-remote", "architect", extra_env=model.env(api_key="test")))
        async with d.client() as c:
            await await_for(lambda: c.list_agents("architect"), 20, what="the architect agent")
            final = await run_task(c, Command("architect", Action.CREATE, "fastapi app"), 60)
        assert final.result.state == TaskState.SUCCEEDED, final.result.error
        usage = final.result.usage
        assert usage.prompt_tokens > 0
        ss = samples(scrape(port)[1])
    labels = {"agent_type": "architect", "model": usage.model}
    assert value(ss, "orchgpt_llm_tokens_total", kind="input", **labels) == usage.prompt_tokens
    assert value(ss, "orchgpt_llm_tokens_total", kind="output", **labels) == usage.completion_tokens
    assert value(ss, "orchgpt_llm_calls_total", **labels) == usage.calls > 0
    assert value(ss, "orchgpt_llm_cost_usd_total", **labels) == pytest.approx(usage.cost_usd)
    assert value(ss, "orchgpt_agents", agent_type="architect", state="idle") == 1


async def test_a_task_recovered_after_a_restart_is_not_submitted_twice(
    daemon_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    port_file = tmp_path / "metrics-port"
    d: Daemon = daemon_factory("--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(port_file)).start()
    async with d.client() as c:
        events: list = []

        async def go() -> None:
            async for ev in c.submit(Command("echo", Action.RUN, "again", options={"delay": "30"})):
                events.append(ev)

        runner = asyncio.create_task(go())
        await await_for(lambda: any(e.state == TaskState.RUNNING for e in events), 20, what="running")
        task_id = events[0].task_id
        runner.cancel()
    d.kill()  # its local agent goes with it; the task is recovered and requeued at the restart
    d.start()
    port = int(port_file.read_text())
    async with d.client() as c:
        await c.cancel(task_id, "enough")
    ss = samples(scrape(port)[1])
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="submitted") is None
    assert value(ss, "orchgpt_tasks_total", agent_type="echo", state="cancelled") == 1
    assert value(ss, "orchgpt_tasks_requeued_total") == 1
