"""Throughput of the SQLite store on this machine.

    python bench/store_throughput.py [--tasks 2000] [--events 100000] [--batch 100]

Prints tasks created + saved 3 times per second (each call one committed
transaction, as the orchestrator does) and events appended per second in
batches (one transaction per batch).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from orchgpt import logs
from orchgpt.models import EventKind, Task, TaskEvent, TaskResult, TaskState, Usage, new_id
from orchgpt.store.sqlite import SqliteStore


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--synchronous", default="NORMAL")
    args = ap.parse_args()
    logs.configure("warning", "console")
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "bench.db", synchronous=args.synchronous)
        session = new_id()
        t0, c0 = time.perf_counter(), _cpu()
        for i in range(args.tasks):
            t = Task(task_id=new_id(), agent_type="echo", input=f"task {i}", session_id=session, options={"delay": "0"})
            store.create_task(t)
            t.state = TaskState.ASSIGNED
            t.agent_id = "agent-1"
            store.save_task(t)
            t.state = TaskState.RUNNING
            t.attempts = 1
            store.save_task(t)
            t.state = TaskState.SUCCEEDED
            t.result = TaskResult(task_id=t.task_id, state=t.state, output=t.input, usage=Usage(10, 20, 0.001, "m", 1))
            store.save_task(t)
        dt_tasks, cpu_tasks = time.perf_counter() - t0, _cpu() - c0

        task = Task(task_id=new_id(), agent_type="echo", session_id=session)
        store.create_task(task)
        seq = 0
        t0, c0 = time.perf_counter(), _cpu()
        while seq < args.events:
            batch = []
            for _ in range(args.batch):
                seq += 1
                batch.append(
                    TaskEvent(task_id=task.task_id, kind=EventKind.TOKEN, seq=seq, text="tok ", agent_id="agent-1")
                )
            store.append_events(batch)
        dt_events, cpu_events = time.perf_counter() - t0, _cpu() - c0
        store.close()
    print(
        f"tasks: {args.tasks} created + 3 saves each in {dt_tasks:.2f}s = "
        f"{args.tasks / dt_tasks:,.0f} tasks/s ({4 * args.tasks / dt_tasks:,.0f} commits/s); "
        f"CPU {cpu_tasks:.2f}s = {args.tasks / cpu_tasks:,.0f} tasks per CPU-second"
    )
    print(
        f"events: {seq} in batches of {args.batch} in {dt_events:.2f}s = "
        f"{seq / dt_events:,.0f} events/s; CPU {cpu_events:.2f}s = "
        f"{seq / cpu_events:,.0f} events per CPU-second"
    )
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
