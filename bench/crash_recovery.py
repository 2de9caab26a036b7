"""Crash recovery: SIGKILL orchgpt while 100 tasks run, restart it, count what became of them.

    python -m bench.crash_recovery [--tasks 100] [--agents 8] [--delay 0.3] [--mode remote|local]
                                   [--kill daemon|agents|both|cut|all] [--store sqlite|postgresql]

``--kill`` says what fails (default: the daemon): ``agents`` SIGKILLs every remote agent
and starts it again (its results journal survives); ``both`` SIGKILLs the daemon and the
agents together and restarts both; ``cut`` puts a TCP proxy between the agents and the
daemon and cuts every agent's stream again and again until all tasks are done. The last
three use remote agents.

Everything is real: certificates from `orchgpt certs init`, an `orchgpt serve`
daemon with a SQLite store in a fresh data directory (``--store postgresql``: a fresh
database on a throwaway PostgreSQL server with fsync on, bench/pg.py), echo agents (`agentd`),
and the gRPC client. The run:

1. starts the daemon and the agents (``remote``: agentd processes started by
   hand, which outlive the daemon and reconnect; ``local``: agents the daemon
   spawns itself, which die with it);
2. submits the tasks through MeshClient with task ids (the idempotency key)
   and an echo ``delay``, and waits until every one is acknowledged and some
   have finished;
3. SIGKILLs the daemon while the rest are running or queued, restarts it on the
   same port and data directory, and waits until every task is terminal;
4. resubmits every task id and checks that nothing runs again;
5. counts: succeeded, failed with a reason, lost (acknowledged, then unknown or
   never finished), completed twice (more than one RESULT event in the store)
   and executed twice (an agent's log shows the task finished more than once).

Prints the counts and exits 1 if any task is lost, unaccounted for, completed
or executed twice, or re-run by a resubmission.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.crash_processes import Daemon, ScenarioError, _sigkill_all, agent_completions, init_certs, start_agents
from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, EventKind, Task, TaskState, new_id

KILLS = ("daemon", "agents", "both", "cut", "window")


@dataclass
class Counts:
    mode: str
    kill: str = "daemon"
    submitted: int = 0
    acknowledged: int = 0
    finished_before_kill: int = 0  # RESULT events the clients saw before the SIGKILL
    recovered_by_daemon: int = 0  # unfinished tasks the restarted daemon loaded from its store
    succeeded: int = 0
    failed_with_reason: int = 0
    failed_without_reason: int = 0
    cancelled: int = 0
    unfinished: int = 0  # still not terminal when the wait ended
    lost: int = 0  # acknowledged, then unknown to the restarted daemon
    unacknowledged_at_kill: int = 0  # kill=window: submitted or not, never answered; sent again after
    completed_twice: int = 0  # more than one RESULT event stored for the task
    executed_twice: int = 0  # an agent log shows the task finished more than once
    requeued: int = 0  # tasks whose result says they were requeued (their agent was gone)
    resubmitted: int = 0
    resubmit_reran: int = 0  # resubmitted ids that ran again or changed
    cuts: int = 0  # stream cuts (kill=cut)
    seconds_to_recover: float = 0.0
    failures: list[str] = field(default_factory=list)  # "task id: reason" of the failed ones
    problems: list[str] = field(default_factory=list)  # what makes the run fail
    notes: list[str] = field(default_factory=list)  # worth saying, not a failure

    @property
    def accounted(self) -> int:
        return self.succeeded + self.failed_with_reason

    @property
    def ok(self) -> bool:
        return not self.problems

    def judge(self) -> None:
        p = self.problems
        if self.acknowledged != self.submitted:
            p.append(f"{self.submitted - self.acknowledged} submissions were never acknowledged")
        if self.accounted != self.submitted:
            p.append(f"only {self.accounted} of {self.submitted} tasks succeeded or failed with a reason")
        for name in (
            "lost",
            "unfinished",
            "failed_without_reason",
            "cancelled",
            "completed_twice",
            "executed_twice",
            "resubmit_reran",
        ):
            if getattr(self, name):
                p.append(f"{name.replace('_', ' ')}: {getattr(self, name)}")
        if self.finished_before_kill >= self.submitted and self.kill != "cut":
            p.append("every task finished before the kill: the run proves nothing (lower --delay?)")


# ---- the scenario ---------------------------------------------------------------------


async def _wait(pred, timeout: float, what: str, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def _session_tasks(client: MeshClient, session: str, n: int) -> list[Task]:
    return await client.list_tasks(limit=n + 50, session_id=session)


async def run(
    workdir: Path,
    tasks: int = 100,
    agents: int = 8,
    delay: float = 0.3,
    mode: str = "remote",
    kill_after: float = 0.2,
    timeout: float = 90.0,
    kill: str = "daemon",
    commit_window_ms: float | None = None,
    store_url: str | None = None,
) -> Counts:
    """Run the scenario in ``workdir``; ``kill_after`` is the share of tasks finished before the kill.

    ``commit_window_ms``: the daemon's --commit-window-ms (None: its default). ``kill="window"``:
    the daemon runs with every group-commit window held open for its whole length (default
    50 ms) and is SIGKILLed at a random moment while submissions still arrive, so inside a
    window; after the restart every acknowledged task must be there, and the client submits
    again (same ids) what was never acknowledged. ``store_url``: the daemon's --store (None: its
    SQLite store in the data directory)."""
    if mode not in ("remote", "local"):
        raise ValueError(f"mode must be remote or local, not {mode!r}")
    if kill not in KILLS:
        raise ValueError(f"kill must be one of {', '.join(KILLS)}, not {kill!r}")
    if kill not in ("daemon", "window") and mode != "remote":
        raise ValueError(f"kill={kill} needs remote agents (spawned ones die with the daemon)")
    workdir.mkdir(parents=True, exist_ok=True)
    certs, data_dir = workdir / "certs", workdir / "data"
    await asyncio.to_thread(init_certs, certs)
    extra = ["--heartbeat-interval", "0.5", "--reconnect-grace", "10", "--max-attempts", "3", "--grace-period", "1"]
    extra += ["--no-spawn"] if mode == "remote" else ["--max-local-agents", str(agents)]
    env = {}
    if kill == "window":
        commit_window_ms = commit_window_ms or 50.0
        env["ORCHGPT_COMMIT_WINDOW_HOLD"] = "1"
    if commit_window_ms is not None:
        extra += ["--commit-window-ms", str(commit_window_ms)]
    if store_url is not None:
        extra += ["--store", store_url]
    daemon = Daemon(workdir, certs, data_dir, extra, env)
    counts = Counts(mode=mode, kill=kill, submitted=tasks)
    proxy = None
    agent_procs: list[subprocess.Popen[bytes]] = []
    session = f"crash-{new_id()[:8]}"
    ids = [f"{session}-{i:03d}" for i in range(tasks)]  # fresh ids: a reused workdir still runs
    try:
        await asyncio.to_thread(daemon.start)
        agents_to = daemon.address
        if kill == "cut":
            from tests.support.proxy import CutProxy

            proxy = CutProxy(daemon.port).start()
            agents_to = f"127.0.0.1:{proxy.port}"
        if mode == "remote":
            agent_procs = start_agents(workdir, certs, agents_to, agents)
        acked: set[str] = set()
        finished: set[str] = set()
        resent: list[asyncio.Task[None]] = []

        async def submit_one(client: MeshClient, task_id: str, i: int) -> None:
            cmd = Command(
                "echo", Action.RUN, f"echo {i}", session_id=session, task_id=task_id, options={"delay": str(delay)}
            )
            try:
                async for ev in client.submit(cmd):
                    acked.add(task_id)
                    if ev.kind == EventKind.RESULT and ev.task_id == task_id:
                        finished.add(task_id)
            except ClientError:
                pass  # the daemon was killed under the stream

        client = daemon.client()
        try:
            if mode == "remote":
                await _wait(lambda: _n_agents(client, agents), 60, f"{agents} agents to register")
            if kill == "window":
                window = commit_window_ms or 50.0
                streams = await _kill_in_window(daemon, ids, lambda t, i: submit_one(client, t, i), acked, window)
                counts.unacknowledged_at_kill = tasks - len(acked)
            else:
                streams = [asyncio.create_task(submit_one(client, t, i)) for i, t in enumerate(ids)]
            await _wait(
                lambda: kill == "window" or (len(acked) == tasks and len(finished) >= kill_after * tasks),
                60,
                "the submissions to be acknowledged and the first tasks to finish",
                0.01,
            )
            if kill in ("daemon", "both"):
                daemon.sigkill()
            if kill == "both":
                # the agents finish what they run while the daemon is down (results kept, not
                # delivered), then die too: only their journals on disk know those results
                await asyncio.sleep(delay * 2 + 0.5)
            if kill in ("agents", "both"):
                _sigkill_all(agent_procs)
            counts.acknowledged = len(acked)
            counts.finished_before_kill = len(finished)
            if kill == "cut":
                assert proxy is not None
                while not all(s.done() for s in streams):
                    proxy.cut()
                    counts.cuts += 1
                    await asyncio.wait(streams, timeout=0.3 + random.random() * 0.7)
                    if counts.cuts > 200:
                        break
            t0 = time.monotonic()
            if kill == "agents":
                agent_procs = start_agents(workdir, certs, agents_to, agents)
            _, pending = await asyncio.wait(streams, timeout=20 if kill in ("daemon", "both", "window") else timeout)
            for s in pending:
                s.cancel()
        finally:
            await client.close()

        if kill in ("daemon", "both", "window"):
            t0 = time.monotonic()
            await asyncio.to_thread(daemon.start, daemon.port)  # same address: remote agents reconnect by themselves
        if kill == "both":
            agent_procs = start_agents(workdir, certs, agents_to, agents)
        client = daemon.client()
        try:
            if kill == "window":  # every acknowledged task is there; the others are sent again
                known = {t.task_id for t in await _session_tasks(client, session, tasks)}
                lost = acked - known
                counts.lost += len(lost)
                acked -= lost  # sent again too, so that the run ends and reports them
                resent += [
                    asyncio.create_task(_until_acked(submit_one, client, t, n, acked)) for n, t in enumerate(ids)
                ]
                await _wait(lambda: len(acked) == tasks, 60, "the submissions sent again to be acknowledged", 0.05)
                counts.acknowledged = len(acked)

            async def all_terminal() -> bool:
                ts = await _session_tasks(client, session, tasks)
                return len(ts) >= tasks and all(t.state.terminal for t in ts)

            try:
                await _wait(all_terminal, timeout, "every task to end", 0.25)
            except ScenarioError as exc:
                counts.problems.append(str(exc))
            counts.seconds_to_recover = round(time.monotonic() - t0, 2)
            recovered = daemon.log_events("tasks_recovered")
            counts.recovered_by_daemon = sum(int(str(e.get("count", 0))) for e in recovered)

            stored = {t.task_id: t for t in await _session_tasks(client, session, tasks)}
            result_events: dict[str, int] = {}
            for task_id in ids:
                t = stored.get(task_id)
                if t is None:
                    counts.lost += 1
                    continue
                if not t.state.terminal:
                    counts.unfinished += 1
                elif t.state == TaskState.SUCCEEDED:
                    counts.succeeded += 1
                elif t.state == TaskState.FAILED:
                    if t.error or (t.result and t.result.error):
                        counts.failed_with_reason += 1
                        counts.failures.append(f"{task_id}: {t.error or t.result.error}")  # type: ignore[union-attr]
                    else:
                        counts.failed_without_reason += 1
                else:
                    counts.cancelled += 1
                if t.result is not None and t.result.data.get("requeued"):
                    counts.requeued += 1
                _, events, _ = await client.get_task(task_id, with_events=True)
                result_events[task_id] = sum(1 for e in events if e.kind == EventKind.RESULT)
            counts.completed_twice = sum(1 for n in result_events.values() if n > 1)
            ran = agent_completions(workdir, data_dir)
            counts.executed_twice = sum(1 for t in ids if ran[t] > 1)
            unseen = [
                t for t in ids if stored.get(t) is not None and stored[t].state == TaskState.SUCCEEDED and ran[t] == 0
            ]
            if unseen and kill in ("agents", "both"):
                # agentd journals a result (fsync) before it logs task_done: an agent SIGKILLed
                # between the two leaves no log line for a run whose journaled result the agent
                # delivered after its restart. A run it did; a log line it never wrote.
                counts.notes.append(
                    f"{len(unseen)} succeeded task(s) whose agent was SIGKILLed before "
                    f"logging task_done (result delivered from its journal): {unseen[:5]}"
                )
            elif unseen:
                counts.problems.append(f"{len(unseen)} succeeded tasks never finished in an agent: {unseen[:5]}")

            # Resubmitting a task id never runs it again: the stream replays the stored events.
            before = {t: (stored[t].attempts, stored[t].state) for t in ids if t in stored}
            again = await asyncio.gather(
                *(
                    _resubmit(
                        client,
                        Command(
                            "echo", Action.RUN, "again", session_id=session, task_id=t, options={"delay": str(delay)}
                        ),
                    )
                    for t in ids
                )
            )
            counts.resubmitted = len(again)
            await asyncio.sleep(max(1.0, 3 * delay))  # time for a wrongly re-dispatched echo to finish
            after = {t.task_id: t for t in await _session_tasks(client, session, tasks)}
            ran_after = agent_completions(workdir, data_dir)
            for task_id, last_state in zip(ids, again, strict=True):
                t = after.get(task_id)
                if (
                    t is None
                    or (t.attempts, t.state) != before.get(task_id)
                    or ran_after[task_id] != ran[task_id]
                    or last_state != before.get(task_id, (0, None))[1]
                ):
                    counts.resubmit_reran += 1
            if len(after) != len(stored):
                counts.problems.append(f"resubmission created tasks: {len(stored)} -> {len(after)}")
        finally:
            await client.close()
    finally:
        daemon.stop()
        if proxy is not None:
            proxy.close()
        for p in agent_procs:
            if p.poll() is None:
                p.terminate()
        for p in agent_procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for st in resent:
            st.cancel()
    counts.judge()
    return counts


async def _until_acked(
    submit: Callable[[MeshClient, str, int], Coroutine[Any, Any, None]],
    client: MeshClient,
    task_id: str,
    i: int,
    acked: set[str],
) -> None:
    """Submit until acknowledged: refused while no agent of the type has reconnected yet."""
    while task_id not in acked:
        await submit(client, task_id, i)
        if task_id not in acked:
            await asyncio.sleep(0.2)


async def _kill_in_window(
    daemon: Daemon,
    ids: list[str],
    submit: Callable[[str, int], Coroutine[Any, Any, None]],
    acked: set[str],
    window_ms: float,
) -> list[asyncio.Task[None]]:
    """Submit the tasks spread over about three windows and SIGKILL the daemon at a random moment
    within a window once a third of them is acknowledged: submissions are still arriving, so it
    dies inside a window with some never answered (a feed shorter than one window would have every
    submission answered by the first commit, and the kill would test nothing)."""
    streams: list[asyncio.Task[None]] = []
    spacing = 3 * window_ms / 1000 / max(1, len(ids))

    async def feed() -> None:
        for i, t in enumerate(ids):
            streams.append(asyncio.create_task(submit(t, i)))
            await asyncio.sleep(spacing * (0.5 + random.random()))

    feeder = asyncio.create_task(feed())
    await _wait(lambda: len(acked) >= len(ids) // 3, 60, "a third of the submissions to be acknowledged", 0.005)
    await asyncio.sleep(random.random() * window_ms / 1000)
    daemon.sigkill()
    feeder.cancel()
    return streams


async def _n_agents(client: MeshClient, n: int) -> bool:
    try:
        return len(await client.list_agents("echo")) >= n
    except ClientError:
        return False


async def _resubmit(client: MeshClient, cmd: Command) -> TaskState | None:
    """Submit again; return the state of the RESULT the stream ends with (None: none)."""
    state = None
    async for ev in client.submit(cmd):
        if ev.kind == EventKind.RESULT and ev.task_id == cmd.task_id:
            state = ev.result.state if ev.result else ev.state
    return state


if __name__ == "__main__":
    from bench.crash_cli import main

    sys.exit(main())
