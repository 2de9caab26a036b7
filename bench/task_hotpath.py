"""Micro-benchmark of one task's trip through the daemon, in CPU time: what tracing costs.

Each task is submitted (inside the ``orchgpt.submit`` span call the Submit RPC makes, when this
checkout has one), queued, assigned to a registered agent through the real ``GrpcAgentLink``
(``send_task``: the RUN envelope, its trace context when tracing is on), answered by a REPLY
envelope through the real ``MeshServicer._from_agent`` and settled (result event, store). Logs are
configured as the daemon's (JSON, info) and written to /dev/null. No network, no TLS.

    python -m bench.task_hotpath [--tasks 3000] [--repeat 5] [--trace]
                                 [--store memory|sqlite|postgresql] [--commit-window-ms MS] [--inflight N]

``--trace``: tracing on, with a tracer provider whose exporter drops the spans (the cost of
making them, not of sending them). ``--store sqlite``: a real SQLite store in a temporary
directory (``--commit-window-ms``: group commit, issue 17); ``--store postgresql``: a throwaway
PostgreSQL server with fsync on (bench/pg.py; a new database per run; run from the repository's
root), its store's writer thread counted in the process's CPU time. ``--inflight N``: N agents,
N tasks submitted at once, then each agent's RUN answered, and again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchgpt import logs
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.mesh import Mesh, Registration
from orchgpt.models import Action, Command, TaskResult, TaskState
from orchgpt.servicer import MeshServicer
from orchgpt.servicer_agents import GrpcAgentLink
from orchgpt.store.memory import MemoryStore
from orchgpt.wire import codec
from orchgpt.wire.batching import Outbox


def _tracing_on() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from orchgpt import tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    tracing.ENABLED = True


def _submit_span() -> Any:
    try:
        from orchgpt import tracing
    except ImportError:  # a checkout without tracing
        return lambda: contextlib.nullcontext()
    return lambda: tracing.span("orchgpt.submit", None, "SERVER", **{"orchgpt.agent.type": "echo"})


_PG: Any = None  # the PostgreSQL server of --store postgresql


def _store(kind: str, window_ms: float) -> Any:
    if kind == "memory":
        return MemoryStore()
    if kind == "postgresql":
        from orchgpt.store import open_store

        return open_store(_PG.new_database(), commit_window_ms=window_ms)
    from orchgpt.store.sqlite import SqliteStore

    return SqliteStore(Path(tempfile.mkdtemp(prefix="hotpath-")) / "s.db", commit_window_ms=window_ms)


async def run_once(tasks: int, trace: bool, store: str = "memory", window_ms: float = 0.0, inflight: int = 1) -> float:
    if inflight > 1:
        return await _run_inflight(tasks, inflight, _store(store, window_ms))
    mesh = Mesh(_store(store, window_ms), builtin_types=("echo",))
    servicer = MeshServicer(mesh, max_message_bytes=4 << 20, max_pending_events=1 << 20)
    if trace:
        from orchgpt import tracing_mesh

        tracing_mesh.install(mesh)
    agent_out = Outbox(max_bytes=1 << 30)
    mesh.register("a1", Registration("echo"), GrpcAgentLink("a1", agent_out, servicer.runs))
    submit_span = _submit_span()
    back = Outbox(max_bytes=1 << 30)
    t0 = time.process_time()  # CPU time: the machine is shared; wall time is noise
    for i in range(tasks):
        with submit_span():
            task, _ = mesh.submit(Command("echo", Action.RUN, "x", task_id=f"t{i}"), submitted_by="client:bench")
        batch = await agent_out.next_batch()
        assert batch is not None and batch.envelopes[-1].type == pb.RUN
        run = batch.envelopes[-1]
        reply = codec.new_envelope(
            pb.REPLY,
            "a1",
            task_id=task.task_id,
            correlation_id=run.id,
            reply=pb.Reply(result=codec.result_to_pb(TaskResult(task.task_id, TaskState.SUCCEEDED, output="x"))),
        )
        servicer._from_agent("a1", reply, back)
        await asyncio.sleep(0)  # the loop's turn (the daemon's next read)
    elapsed = time.process_time() - t0
    mesh.flush()
    assert mesh.stats["completed"] == tasks, mesh.stats
    return tasks / elapsed


async def _run_inflight(tasks: int, inflight: int, store: Any) -> float:
    mesh = Mesh(store, builtin_types=("echo",))
    servicer = MeshServicer(mesh, max_message_bytes=4 << 20, max_pending_events=1 << 20)
    outs = []
    for a in range(inflight):
        out = Outbox(max_bytes=1 << 30)
        mesh.register(f"a{a}", Registration("echo"), GrpcAgentLink(f"a{a}", out, servicer.runs))
        outs.append(out)
    back = Outbox(max_bytes=1 << 30)
    t0 = time.process_time()
    done = 0
    while done < tasks:
        for i in range(done, done + inflight):
            mesh.submit(Command("echo", Action.RUN, "x", task_id=f"t{i}"), submitted_by="client:bench")
        await asyncio.sleep(0)
        for a, out in enumerate(outs):
            batch = await out.next_batch()
            assert batch is not None
            run = next(e for e in batch.envelopes if e.type == pb.RUN)
            res = TaskResult(run.task_id, TaskState.SUCCEEDED, output="x")
            reply = codec.new_envelope(
                pb.REPLY,
                f"a{a}",
                task_id=run.task_id,
                correlation_id=run.id,
                reply=pb.Reply(result=codec.result_to_pb(res)),
            )
            servicer._from_agent(f"a{a}", reply, back)
        await asyncio.sleep(0)
        done += inflight
    mesh.flush()
    flush = getattr(store, "commit_now", None)
    if flush is not None:
        flush()
    elapsed = time.process_time() - t0
    assert mesh.stats["completed"] == done, mesh.stats
    return done / elapsed


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--trace", action="store_true", help="tracing on (spans made, then dropped)")
    ap.add_argument("--store", choices=["memory", "sqlite", "postgresql"], default="memory")
    ap.add_argument("--commit-window-ms", type=float, default=0.0, help="group commit (0: a commit per write)")
    ap.add_argument("--inflight", type=int, default=1, help="agents and tasks at once")
    a = ap.parse_args(argv)
    global _PG
    if a.store == "postgresql":
        from tests.support.postgres import PostgresServer

        _PG = PostgresServer(fsync=True)
        _PG.start()
    devnull = open(os.devnull, "w")
    real_stderr, sys.stderr = sys.stderr, devnull
    try:
        logs.configure("info", "json")  # the daemon's log chain, written nowhere
        if a.trace:
            _tracing_on()
        rates = [
            asyncio.run(run_once(a.tasks, a.trace, a.store, a.commit_window_ms, a.inflight)) for _ in range(a.repeat)
        ]
    finally:
        sys.stderr = real_stderr
        if _PG is not None:
            _PG.stop()
    print(
        f"tasks per CPU second: best {max(rates):,.0f}  median {statistics.median(rates):,.0f}  "
        f"({a.tasks} tasks, {a.repeat} runs, tracing {'on' if a.trace else 'off'}, {a.store} store, "
        f"commit window {a.commit_window_ms:g} ms, {a.inflight} in flight)"
    )


if __name__ == "__main__":
    main()
