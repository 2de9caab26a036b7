"""Exactly once across reconnects (issue 11, findings 1, 2 and 8).

A real TCP proxy (tests/support/proxy.py) between one agentd and the daemon cuts the agent's
stream at every step of a task; a second agent connected directly is idle and would take the
task if the daemon gave it away. The echo agent appends a line to a file each time a run
finishes, so that the tests count runs, not messages.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from orchgpt.models import Action, Command, EventKind, Task, TaskEvent, TaskState
from tests.support.mesh import AgentProc, Daemon, await_for, start_agent, wait_for
from tests.support.proxy import CutProxy

pytestmark = pytest.mark.timeout(90)


def runs(record: Path) -> Counter[str]:
    """Finished runs per task id (lines "TASK_ID INPUT")."""
    if not record.exists():
        return Counter()
    return Counter(line.split(" ", 1)[0] for line in record.read_text().splitlines() if line)


def runs_by_input(record: Path) -> Counter[str]:
    if not record.exists():
        return Counter()
    return Counter(line.split(" ", 1)[1] for line in record.read_text().splitlines() if " " in line)


async def agent_ids(d: Daemon) -> set[str]:
    async with d.client() as c:
        return {a.agent_id for a in await c.list_agents()}


async def task_of(d: Daemon, task_id: str) -> Task | None:
    try:
        async with d.client() as c:
            t, _, _ = await c.get_task(task_id, with_events=False)
            return t
    except Exception:  # not known yet, or the daemon is restarting
        return None


async def finished(d: Daemon, task_id: str, timeout: float) -> Task:
    box: list[Task] = []

    async def done() -> bool:
        t = await task_of(d, task_id)
        if t is not None and t.state.terminal:
            box.append(t)
            return True
        return False

    await await_for(done, timeout, interval=0.2, what=f"task {task_id} to finish")
    return box[0]


async def follow(d: Daemon, cmd: Command, sink: list[TaskEvent]) -> None:
    async with d.client() as c:
        async for ev in c.submit(cmd):
            sink.append(ev)


def running_on(events: list[TaskEvent], agent: str) -> bool:
    return any(e.kind == EventKind.STATUS and e.state == TaskState.RUNNING and e.agent_id == agent for e in events)


@pytest.mark.parametrize(
    "step",
    ["before_run_is_read", "mid_task", "finished_while_disconnected", "after_reply_before_ack"],
)
async def test_a_stream_cut_at_any_step_runs_the_task_once(
    step: str, daemon_factory, agents: list[AgentProc], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # a long grace and a patient heartbeat: flaky-1 always comes back in time, and the daemon
    # never drops it on its own while a direction is blackholed (each step stays what it says)
    d: Daemon = daemon_factory("--no-spawn", "--reconnect-grace", "30", "--heartbeat-misses", "30").start()
    record = tmp_path / "runs.txt"
    with CutProxy(d.port) as proxy:
        # the proxied agent registers first, so that it is the first idle one
        a = start_agent(d, "flaky-1", extra_args=["--orchestrator", f"127.0.0.1:{proxy.port}"])
        agents.append(a)
        await await_for(lambda: _has(d, {"flaky-1"}), 30, what="flaky-1")
        b = start_agent(d, "steady-1")
        agents.append(b)
        await await_for(lambda: _has(d, {"flaky-1", "steady-1"}), 30, what="steady-1")

        delay = "0.5" if step == "before_run_is_read" else "2"
        events: list[TaskEvent] = []
        cmd = Command(
            "echo",
            Action.RUN,
            "once",
            task_id=f"cut-{step}",
            options={"delay": delay, "record": str(record)},
        )
        if step == "before_run_is_read":
            proxy.blackhole("down")  # the RUN never reaches flaky-1
        follower = asyncio.create_task(follow(d, cmd, events))
        if step == "before_run_is_read":
            await await_for(
                lambda: any(e.state == TaskState.ASSIGNED and e.agent_id == "flaky-1" for e in events),
                20,
                what="the RUN to flaky-1",
            )
            await asyncio.sleep(0.3)
            proxy.cut()
        else:
            await await_for(lambda: running_on(events, "flaky-1"), 20, what="the task to run on flaky-1")
            if step == "mid_task":
                proxy.cut()
            elif step == "finished_while_disconnected":
                proxy.pause()
                proxy.cut()
                await await_for(lambda: runs(record)[cmd.task_id] >= 1, 20, what="flaky-1 to finish offline")
                await asyncio.sleep(0.5)
                proxy.resume()
            else:  # after_reply_before_ack
                proxy.blackhole("up")  # the REPLY leaves flaky-1 but never arrives
                await await_for(lambda: runs(record)[cmd.task_id] >= 1, 20, what="flaky-1 to finish")
                await asyncio.sleep(0.3)
                proxy.cut()
        await asyncio.wait_for(follower, 30)
        if step == "finished_while_disconnected":
            wait_for(lambda: proxy.connections >= 2, 20, what="flaky-1 to reconnect")
        final = events[-1]
        assert final.kind == EventKind.RESULT and final.state == TaskState.SUCCEEDED, final
        assert runs(record) == Counter({cmd.task_id: 1}), (runs(record), d.log()[-3000:])
        assert proxy.connections >= 2  # flaky-1 did reconnect through the proxy
        assert final.result is not None and final.result.output == "once"
        if step != "before_run_is_read":
            # it stayed flaky-1's task: no second RUN, no attempt 2
            assert final.result.agent_id == "flaky-1", final.result
            async with d.client() as c:
                t, _, _ = await c.get_task(cmd.task_id, with_events=False)
            assert t.attempts == 1, t
        if step in ("finished_while_disconnected", "after_reply_before_ack"):
            # the result came with the REGISTER of the reconnect
            assert '"pending_results": 1' in d.log()
        # flaky-1 is idle again and takes new work (the busy/idle bookkeeping survived the cut)
        more: list[TaskEvent] = []
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    follow(
                        d,
                        Command(
                            "echo",
                            Action.RUN,
                            f"next-{i}",
                            task_id=f"next-{i}",
                            options={"delay": "0.5"},
                        ),
                        more,
                    )
                    for i in range(2)
                )
            ),
            30,
        )
        assert {e.result.agent_id for e in more if e.kind == EventKind.RESULT and e.result} == {
            "flaky-1",
            "steady-1",
        }


def _logged(agent: AgentProc, event: str, task_id: str) -> bool:
    for line in agent.log().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("event") == event and r.get("task_id") == task_id:
                return True
    return False


async def _has(d: Daemon, names: set[str]) -> bool:
    try:
        return names <= await agent_ids(d)
    except Exception:
        return False


async def test_daemon_and_remote_agent_killed_together_lose_and_repeat_nothing(
    daemon_factory, agents: list[AgentProc], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The agent finishes a task while the daemon is down, then dies too: its journal on disk
    delivers the result after both restart (finding 2)."""
    d: Daemon = daemon_factory("--no-spawn", "--reconnect-grace", "5").start()
    record = tmp_path / "runs.txt"
    a = start_agent(d, "sturdy-1")
    agents.append(a)
    await await_for(lambda: _has(d, {"sturdy-1"}), 30, what="sturdy-1")
    ids = ["x-long", "y-next", "z-last"]
    sinks: dict[str, list[TaskEvent]] = {i: [] for i in ids}
    followers = [
        asyncio.create_task(
            follow(
                d,
                Command(
                    "echo",
                    Action.RUN,
                    i,
                    task_id=i,
                    options={"delay": "2" if i == "x-long" else "0.2", "record": str(record)},
                ),
                sinks[i],
            )
        )
        for i in ids
    ]
    await await_for(
        lambda: running_on(sinks["x-long"], "sturdy-1") and all(sinks[i] for i in ids),
        20,
        what="x-long running, the others accepted",
    )
    d.kill()  # SIGKILL
    for f in followers:
        f.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    wait_for(
        lambda: _logged(a, "task_done", "x-long"),
        20,
        what="sturdy-1 to finish x-long while the daemon is down",
    )
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    journal = a.log_path.parent / "certs" / "sturdy-1.results"
    assert journal.exists() and journal.stat().st_mode & 0o777 == 0o600

    d.start(port=d.port)
    a2 = start_agent(d, "sturdy-1")  # the same agent, restarted by hand (same certificate directory)
    agents.append(a2)
    for i in ids:
        t = await finished(d, i, 30)
        assert t.state == TaskState.SUCCEEDED and t.result is not None and t.result.output == i, t
    assert runs(record) == Counter({i: 1 for i in ids}), (runs(record), d.log()[-3000:])
    x = await task_of(d, "x-long")
    assert x is not None and x.attempts == 1
    assert '"journal_loaded"' in a2.log()
    wait_for(lambda: not journal.exists(), 10, what="the confirmed results to leave the journal")


async def test_a_manager_rerun_after_a_daemon_crash_finds_its_sub_tasks(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Finding 8: spawned agents die with the daemon; the re-run parent delegates its sub-tasks
    again with the same keys and gets the finished one's result and the requeued ones."""
    d: Daemon = daemon_factory("--reconnect-grace", "3").start()
    record = tmp_path / "runs.txt"
    events: list[TaskEvent] = []
    cmd = Command(
        "echo",
        Action.RUN,
        "plan",
        task_id="parent-1",
        options={"children": "3", "child_delay": "2", "record": str(record)},
    )
    follower = asyncio.create_task(follow(d, cmd, events))
    # child 0 finished (after 2 s), children 1 and 2 still in flight (4 s, 6 s)
    await await_for(lambda: runs_by_input(record)["plan/0"] == 1, 40, what="the first sub-task to finish")
    d.kill()
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    assert runs_by_input(record)["plan/2"] == 0
    d.start(port=d.port)
    t = await finished(d, "parent-1", 60)
    assert t.state == TaskState.SUCCEEDED and t.result is not None, t
    assert t.result.output == "plan/0 plan/1 plan/2"
    assert runs_by_input(record) == Counter({"plan/0": 1, "plan/1": 1, "plan/2": 1, "plan": 1}), runs_by_input(record)
    async with d.client() as c:
        _, _, children = await c.get_task("parent-1", with_events=False)
    assert len(children) == 3 and all(ch.state == TaskState.SUCCEEDED for ch in children), children


async def test_sub_tasks_of_a_task_with_approval_are_created_with_approval(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Finding 7: `/manager ... --approve` asked nothing for the manager's sub-tasks."""
    from tests.support.stores import daemon_store

    d: Daemon = daemon_factory().start()
    events: list[TaskEvent] = []
    cmd = Command("echo", Action.RUN, "ask", task_id="asks-1", approval=True, options={"children": "2"})
    await asyncio.wait_for(follow(d, cmd, events), 40)
    assert events[-1].state == TaskState.SUCCEEDED
    assert d.stop() == 0
    store = daemon_store(d)
    try:
        children = store.children("asks-1")
        assert len(children) == 2 and all(c.approval for c in children), children
    finally:
        store.close()
