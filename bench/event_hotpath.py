"""Micro-benchmark of the token hot path inside the daemon: tokens/s through the real code.

An agent's Batch of TASK_EVENT token envelopes is parsed, handed to the real
``MeshServicer._from_agent`` (decode by the codec, event budget, mesh.on_event: seq, store,
fan-out), re-stamped for one watching client by the real ``EventSubscription`` and packed into
the client's Batch, which is serialized as gRPC would. No network, no TLS: the part of a token's
trip that this process spends CPU on.

    python -m bench.event_hotpath [--tokens 200000] [--batch 64] [--watchers 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.mesh import Mesh, Registration
from orchgpt.models import Action, ApprovalResponse, Command, Task, TaskResult
from orchgpt.servicer import EventSubscription, MeshServicer
from orchgpt.store.memory import MemoryStore
from orchgpt.wire.batching import Outbox


class _Link:
    def send_task(self, task: Task) -> None: ...
    def send_cancel(self, task_id: str, reason: str) -> None: ...
    def send_terminate(self, reason: str) -> None: ...
    def send_approval(self, task_id: str, response: ApprovalResponse) -> None: ...
    def send_reply(self, correlation_id: str, result: TaskResult) -> None: ...
    def send_ping(self) -> None: ...
    def close(self, reason: str, code: str = "UNAVAILABLE") -> None: ...


def _agent_batches(task_id: str, tokens: int, batch: int) -> list[bytes]:
    out = []
    for start in range(0, tokens, batch):
        envs = [
            pb.Envelope(
                id=f"e{i}",
                sender="a1",
                type=pb.TASK_EVENT,
                task_id=task_id,
                timestamp_ms=1,
                event=pb.TaskEvent(token=pb.TokenEvent(text=" tok")),
            )
            for i in range(start, min(tokens, start + batch))
        ]
        out.append(pb.Batch(envelopes=envs).SerializeToString())
    return out


async def run_once(tokens: int, batch: int, watchers: int) -> float:
    """Tokens per CPU second through decode, mesh and re-stamp for ``watchers`` clients."""
    mesh = Mesh(MemoryStore(), builtin_types=("echo",))
    servicer = MeshServicer(mesh, max_message_bytes=4 << 20, max_pending_events=1 << 30)
    servicer.event_budget.limit = tokens * 2
    mesh.register("a1", Registration("echo"), _Link())
    task, _ = mesh.submit(Command("echo", Action.RUN, "x", task_id="t1"), submitted_by="client:bench")
    outs = []
    for _ in range(watchers):
        ob = Outbox(max_bytes=1 << 30)
        mesh.subscribe(EventSubscription(ob, 1 << 30, end_task=task.task_id), task.task_id)
        outs.append(ob)
    agent_out = Outbox()
    frames = _agent_batches(task.task_id, tokens, batch)
    sent = 0
    t0 = time.process_time()  # CPU time: the machine is shared; wall time is noise
    for raw in frames:
        for env in pb.Batch.FromString(raw).envelopes:
            servicer._from_agent("a1", env, agent_out)
        for ob in outs:  # the client writer: one Batch per round, serialized by gRPC
            while len(ob):
                b = await ob.next_batch()
                assert b is not None
                sent += len(b.SerializeToString())
    elapsed = time.process_time() - t0
    mesh.flush()
    assert sent > 0 and len(mesh.store.events(task.task_id)) == tokens + 2  # queued + assigned
    return tokens / elapsed


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--watchers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    rates = [asyncio.run(run_once(a.tokens, a.batch, a.watchers)) for _ in range(a.repeat)]
    print(
        f"tokens per CPU second: best {max(rates):,.0f}  median {statistics.median(rates):,.0f}  "
        f"({a.tokens} tokens, batch {a.batch}, {a.watchers} watcher(s), {a.repeat} runs)"
    )


if __name__ == "__main__":
    main()
