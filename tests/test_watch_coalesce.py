"""A watcher that reads slowly gets a burst of token deltas coalesced, never dropped; one over
the pending bound with events of other kinds is cut with RESOURCE_EXHAUSTED (a clear status).

A real daemon (default --max-pending-events, 10,000; the per-task event and per-agent rate
limits off, as in bench/), a real agent link (bench.wire, mutual TLS) streaming token deltas,
and a client on Mesh.Watch over a channel with a small flow-control window (no BDP probing),
so that what the client does not read waits in the daemon, as with a client that cannot keep up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench import wire
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.tls import channel_credentials, channel_options
from orchgpt.wire.coalesce import SEQ_FROM, deltas
from tests.support.mesh import Daemon, issue

pytestmark = pytest.mark.timeout(90)

LIMITS_OFF = ("--agent-messages-per-second", "0", "--max-events-per-task", "0")


@dataclass
class Setup:
    agent: wire.Link
    run: pb.Envelope
    watch: Any  # the Watch call
    first: pb.Batch
    stub: pb_grpc.MeshStub

    async def finished(self) -> None:
        """Wait (bounded) until the daemon has handled everything emitted: the task has ended."""
        for _ in range(600):
            t = (await self.stub.GetTask(pb.GetTaskRequest(task_id="tok-task"))).task
            if t.state == pb.SUCCEEDED:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the task did not end")

    async def status(self) -> tuple[Any, str]:
        """Read until the stream ends; its status."""
        try:
            while await asyncio.wait_for(self.watch.read(), 30) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return await self.watch.code(), await self.watch.details()

    async def emit(self, texts: list[str]) -> None:
        for text in texts:
            await self.agent.send(
                pb.Envelope(
                    id=wire.next_id(),
                    sender="tok-1",
                    type=pb.TASK_EVENT,
                    task_id="tok-task",
                    event=pb.TaskEvent(task_id="tok-task", token=pb.TokenEvent(text=text)),
                )
            )
        await self.agent.send(
            pb.Envelope(
                id=wire.next_id(),
                sender="tok-1",
                type=pb.REPLY,
                task_id="tok-task",
                correlation_id=self.run.id,
                reply=pb.Reply(result=pb.TaskResult(task_id="tok-task", state=pb.SUCCEEDED, output="ok")),
            )
        )


@asynccontextmanager
async def _watching(daemon: Daemon, certs: Path) -> AsyncIterator[Setup]:
    target = daemon.address
    agent = wire.Link(wire.open_channel(target, issue(certs, "tok-1")), wire.ORCHGPT, "tok-1")
    await agent.register(agent_type="tok")
    opts = [
        *channel_options(target),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 1024),
    ]
    cli = grpc.aio.secure_channel(target, channel_credentials(issue(certs, "cli", "client")), options=opts)
    try:
        stub = pb_grpc.MeshStub(cli)
        submit = stub.Submit(
            pb.SubmitRequest(command=pb.Command(agent_type="tok", action=pb.RUN_ACTION, input="go", task_id="tok-task"))
        )
        run = None
        while run is None:
            run = next((e for e in await agent.recv() if e.type == pb.RUN), None)
        submit.cancel()
        watch = stub.Watch(pb.WatchRequest(task_id="tok-task"))
        first = await watch.read()  # the stored events (ASSIGNED ...): the subscription is live
        assert first is not grpc.aio.EOF
        yield Setup(agent, run, watch, first, stub)
    finally:
        await cli.close()
        await agent.close()


async def _slow_watch(daemon: Daemon, certs: Path, tokens: int) -> None:
    async with _watching(daemon, certs) as s:
        # the watcher falls far behind: it reads nothing while the burst is emitted
        await s.emit([f"<{i}>" for i in range(tokens)])
        await s.finished()
        text: list[str] = []
        seqs: list[tuple[int, int]] = []
        result = None
        envs = list(s.first.envelopes)
        while True:
            for env in envs:
                ev = env.event
                if ev.HasField("token"):
                    text.append(ev.token.text)
                    seqs.append((int(ev.data.get(SEQ_FROM, ev.seq)), ev.seq))
                    assert deltas(ev) == ev.seq - seqs[-1][0] + 1
                elif ev.HasField("result"):
                    result = ev
            if result is not None:
                break
            await asyncio.sleep(0.1)  # then a slow reader: one frame at a time, with pauses
            msg = await asyncio.wait_for(s.watch.read(), 30)
            assert msg is not grpc.aio.EOF, (
                f"the watch stream ended: {await s.watch.code()} "
                f"{await s.watch.details()} after {len(seqs)} token events"
            )
            envs = list(msg.envelopes)
        assert "".join(text) == "".join(f"<{i}>" for i in range(tokens))
        for (_a0, b0), (a1, _b1) in itertools.pairwise(seqs):
            assert a1 == b0 + 1  # the ranges follow each other: no gap, no overlap
        assert sum(b - a + 1 for a, b in seqs) == tokens
        assert len(seqs) < tokens / 10  # coalesced: fewer, larger events
        assert result.seq == seqs[-1][1] + 1
        assert await s.watch.code() == grpc.StatusCode.OK


def test_slow_watcher_gets_every_token_coalesced_and_is_not_dropped(daemon_factory, certs: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory(*LIMITS_OFF).start()
    asyncio.run(asyncio.wait_for(_slow_watch(daemon, certs, 20_000), 80))  # twice the pending bound


async def _flooded_watch(daemon: Daemon, certs: Path) -> tuple[Any, str]:
    async with _watching(daemon, certs) as s:
        for i in range(3000):  # events of other kinds are not coalesced: the count bound holds
            await s.agent.send(
                pb.Envelope(
                    id=wire.next_id(),
                    sender="tok-1",
                    type=pb.TASK_EVENT,
                    task_id="tok-task",
                    event=pb.TaskEvent(task_id="tok-task", log=pb.LogEvent(text=f"line {i}")),
                )
            )
        await s.emit([])
        await s.finished()
        return await s.status()


def test_task_watcher_over_the_pending_bound_ends_with_resource_exhausted(daemon_factory, certs: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory(*LIMITS_OFF, "--max-pending-events", "100").start()
    code, details = asyncio.run(asyncio.wait_for(_flooded_watch(daemon, certs), 80))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert "too slow" in details and "after_seq" in details
