"""Issue 10, finding 5: one peer must not exhaust the daemon.

Bytes queued per stream, messages per second per agent, events per task, input size per
task, and ListTasks pages bounded by bytes (two legal 2.5 MB inputs broke it for everyone).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from orchgpt import codec
from orchgpt.batching import Outbox
from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.tls import secure_channel
from tests.support.mesh import Daemon, await_for, issue

pytestmark = pytest.mark.timeout(90)

MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _next(call: object, want: int, timeout: float = 10.0) -> pb.Envelope:
    async def find() -> pb.Envelope:
        async for batch in call:  # type: ignore[attr-defined]
            for env in batch.envelopes:
                if env.type == want:
                    return env
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout)


async def test_an_agent_that_pings_and_never_reads_is_cut_and_memory_stays_bounded(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--agent-messages-per-second", "0").start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    name = "flooder"
    paths = issue(daemon.certs, name, "agent")
    sent = 0
    done = asyncio.Event()

    async def frames() -> AsyncIterator[pb.Batch]:
        nonlocal sent
        yield pb.Batch(envelopes=[codec.new_envelope(pb.REGISTER, name, register=pb.Register(agent_type="flood"))])
        while sent < 10 * MB:
            b = pb.Batch(envelopes=[codec.new_envelope(pb.PING, name, ping=pb.Ping(sent_ms=1)) for _ in range(500)])
            sent += b.ByteSize()
            yield b
        done.set()

    async with secure_channel(daemon.address, paths) as ch:
        async with daemon.client() as c:
            await c.check()
            before = rss_bytes(pid)
            call = pb_grpc.MeshStub(ch).Connect(frames())  # never read: the PONGs pile up in the daemon
            await await_for(lambda: "agent_cut" in daemon.log() or done.is_set(), 60, what="the cut or 10 MB sent")
            await await_for(lambda: _no_agents(c), 10, what="the flooder to be gone")
            after = rss_bytes(pid)
            print(f"rss growth {(after - before) / MB:.1f} MB, sent {sent / MB:.1f} MB")
            assert "max_stream_queue_bytes" in daemon.log()
            assert after - before < 64 * MB, (
                f"daemon grew by {(after - before) / MB:.0f} MB for {sent / MB:.1f} MB sent"
            )
            call.cancel()
            # the daemon is up and serves others
            await c.check()
            await c.list_tasks()


async def _no_agents(c) -> bool:  # type: ignore[no-untyped-def]
    return not await c.list_agents()


async def _agent(daemon: Daemon, name: str, agent_type: str):  # type: ignore[no-untyped-def]
    paths = issue(daemon.certs, name, "agent")
    ch = secure_channel(daemon.address, paths)
    out = Outbox()
    out.put(codec.new_envelope(pb.REGISTER, name, register=pb.Register(agent_type=agent_type)))
    call = pb_grpc.MeshStub(ch).Connect(out.iterate())
    await _next(call, pb.REGISTERED)
    return ch, out, call


async def test_messages_per_second_beyond_the_rate_are_refused_then_the_agent_is_cut(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory(
        "--no-spawn", "--agent-messages-per-second", "50", "--agent-message-burst", "100"
    ).start()
    ch, out, call = await _agent(daemon, "chatty", "chattype")
    try:
        for _ in range(600):  # far over 50/s with a burst of 100
            out.put(codec.new_envelope(pb.PING, "chatty"))
        err = await _next(call, pb.ERROR)
        assert err.error.code == "RESOURCE_EXHAUSTED" and "agent_messages_per_second" in err.error.message
        async with daemon.client() as c:
            assert [a.agent_id for a in await c.list_agents()] == ["chatty"]  # refused, not cut (yet)
        # the agent keeps on: it is disconnected
        for _ in range(20):
            for _ in range(100):
                out.put(codec.new_envelope(pb.PING, "chatty"))
            await asyncio.sleep(0.01)
        got, status = await asyncio.wait_for(_drain(call), 20)
        # the last word is an ERROR saying why, then RESOURCE_EXHAUSTED (a client still sending may
        # only see its own send fail: then the daemon's log and registry tell)
        last_errors = [e.error for e in got if e.type == pb.ERROR and "kept on" in e.error.message]
        assert all(e.code == "RESOURCE_EXHAUSTED" for e in last_errors)
        assert status is not None
    finally:
        out.close()
        await ch.close()
    assert "agent_abusive" in daemon.log()
    async with daemon.client() as c:
        await c.check()
        assert await c.list_agents() == []


async def _drain(call: object) -> tuple[list[pb.Envelope], grpc.aio.AioRpcError | None]:
    got: list[pb.Envelope] = []
    try:
        async for batch in call:  # type: ignore[attr-defined]
            got.extend(batch.envelopes)
    except grpc.aio.AioRpcError as exc:
        return got, exc
    return got, None


async def _submit_first(daemon: Daemon, cmd: pb.Command) -> str:
    """Submit and return the task id (from the first event), leaving the task running."""
    async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as ch:
        call = pb_grpc.MeshStub(ch).Submit(pb.SubmitRequest(command=cmd), timeout=20)
        async for batch in call:
            return batch.envelopes[0].task_id
    raise AssertionError("no event")


async def test_events_per_task_are_capped_with_a_marker_and_the_result_kept(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--max-events-per-task", "50").start()
    ch, out, call = await _agent(daemon, "noisy", "noisytype")
    try:
        task_id = await _submit_first(daemon, pb.Command(agent_type="noisytype", action=pb.RUN_ACTION, input="x"))
        run = await _next(call, pb.RUN)
        for i in range(300):
            out.put(
                codec.new_envelope(
                    pb.TASK_EVENT,
                    "noisy",
                    task_id=task_id,
                    event=pb.TaskEvent(task_id=task_id, token=pb.TokenEvent(text=f"t{i} " * 50)),
                )
            )
        err = await _next(call, pb.ERROR)
        assert err.error.code == "RESOURCE_EXHAUSTED" and "max_events_per_task" in err.error.message
        out.put(
            codec.new_envelope(
                pb.REPLY,
                "noisy",
                task_id=task_id,
                correlation_id=run.id,
                reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, output="done")),
            )
        )
        async with daemon.client() as c:

            async def finished() -> bool:
                t, _, _ = await c.get_task(task_id, with_events=False)
                return t.state.terminal

            await await_for(finished, 10, what="the task to finish")
            t, events, _ = await c.get_task(task_id)
        assert t.result is not None and t.result.output == "done"
        assert len(events) <= 50 + 5, len(events)  # the daemon's own (queued, assigned, result) + 50 + marker
        assert any(e.data.get("events_dropped") == "true" and "max_events_per_task" in e.text for e in events)
    finally:
        out.close()
        await ch.close()


async def test_input_size_per_task_is_limited_for_submit_and_delegate(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--max-task-input-bytes", "1000").start()
    ch, out, call = await _agent(daemon, "delegator", "deltype")
    try:
        async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as cch:
            stub = pb_grpc.MeshStub(cch)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in stub.Submit(
                    pb.SubmitRequest(command=pb.Command(agent_type="deltype", action=pb.RUN_ACTION, input="x" * 1001)),
                    timeout=10,
                ):
                    pass
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "command.input" in (ei.value.details() or "") and "1000" in (ei.value.details() or "")
        task_id = await _submit_first(daemon, pb.Command(agent_type="deltype", action=pb.RUN_ACTION, input="ok"))
        await _next(call, pb.RUN)
        big = codec.new_envelope(
            pb.DELEGATE_TASK,
            "delegator",
            task_id=task_id,
            task=pb.TaskSpec(agent_type="deltype", action=pb.RUN_ACTION, input="y" * 5000, parent_task_id=task_id),
        )
        out.put(big)
        err = await _next(call, pb.ERROR)
        assert err.error.code == "INVALID_ARGUMENT" and err.correlation_id == big.id
        assert "task.input" in err.error.message and "1000" in err.error.message
    finally:
        out.close()
        await ch.close()


async def test_two_large_inputs_do_not_break_list_tasks(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    """The finding: two legal 2.5 MB task inputs made ListTasks fail for every user."""
    daemon: Daemon = daemon_factory("--no-spawn").start()
    ch, out, _call = await _agent(daemon, "slowpoke", "bigtype")
    try:
        big = "z" * (5 * MB // 2)
        ids = [
            await _submit_first(daemon, pb.Command(agent_type="bigtype", action=pb.RUN_ACTION, input=big))
            for _ in range(2)
        ]
        ids.append(await _submit_first(daemon, pb.Command(agent_type="bigtype", action=pb.RUN_ACTION, input="small")))
        async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as cch:
            stub = pb_grpc.MeshStub(cch)
            seen: list[pb.TaskInfo] = []
            token = ""
            for _ in range(10):
                r = await stub.ListTasks(pb.ListTasksRequest(limit=50, page_token=token), timeout=10)
                assert r.ByteSize() < 4 * MB
                seen.extend(r.tasks)
                token = r.next_page_token
                if not token:
                    break
            assert sorted(t.task_id for t in seen) == sorted(ids)
            bigs = [t for t in seen if t.task_id in ids[:2]]
            assert all(len(t.input) < 10_000 and "truncated" in t.input for t in bigs)
            assert [t.input for t in seen if t.task_id == ids[2]] == ["small"]
            # GetTask still has the whole input
            g = await stub.GetTask(pb.GetTaskRequest(task_id=ids[0]), timeout=10)
            assert len(g.task.input) == len(big)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.ListTasks(pb.ListTasksRequest(page_token="garbage"), timeout=10)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in (ei.value.details() or "")
        # the client library reads every page
        async with daemon.client() as c:
            tasks = await c.list_tasks(limit=50)
            assert sorted(t.task_id for t in tasks) == sorted(ids)
    finally:
        out.close()
        await ch.close()


async def test_a_small_page_byte_budget_pages_the_list(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--list-page-bytes", "16384", "--list-field-bytes", "4096").start()
    ch, out, _call = await _agent(daemon, "pager", "pagetype")
    try:
        ids = [
            await _submit_first(
                daemon, pb.Command(agent_type="pagetype", action=pb.RUN_ACTION, input=f"{i} " + "p" * 6000)
            )
            for i in range(8)
        ]
        async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as cch:
            stub = pb_grpc.MeshStub(cch)
            first = await stub.ListTasks(pb.ListTasksRequest(limit=50), timeout=10)
            assert 1 <= len(first.tasks) < 8 and first.next_page_token
        async with daemon.client() as c:
            assert sorted(t.task_id for t in await c.list_tasks(limit=50)) == sorted(ids)
            assert len(await c.list_tasks(limit=3)) == 3
    finally:
        out.close()
        await ch.close()


async def test_a_watching_client_that_never_reads_is_cut(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory(
        "--no-spawn",
        "--max-stream-queue-bytes",
        str(MB),
        "--max-events-per-task",
        "0",
        "--agent-messages-per-second",
        "0",
    ).start()
    assert daemon.proc is not None
    ch, out, call = await _agent(daemon, "talker", "talktype")
    try:
        task_id = await _submit_first(daemon, pb.Command(agent_type="talktype", action=pb.RUN_ACTION, input="x"))
        await _next(call, pb.RUN)
        async with secure_channel(daemon.address, paths_for(daemon.certs, "cli")) as wch:
            watch = pb_grpc.MeshStub(wch).Watch(pb.WatchRequest())  # opened, never read
            await asyncio.sleep(0.5)
            before = rss_bytes(daemon.proc.pid)
            for i in range(1000):  # 1000 x 8 KB: 8 MB for a client that reads nothing
                out.put(
                    codec.new_envelope(
                        pb.TASK_EVENT,
                        "talker",
                        task_id=task_id,
                        event=pb.TaskEvent(task_id=task_id, log=pb.LogEvent(text=f"{i}" * 8000)),
                    )
                )
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            await await_for(lambda: '"stream_cut"' in daemon.log(), 20, what="the watcher to be cut")
            assert '"peer": "cli"' in daemon.log() and "max_stream_queue_bytes" in daemon.log()
            assert rss_bytes(daemon.proc.pid) - before < 64 * MB
            watch.cancel()
        async with daemon.client() as c:  # the daemon serves others
            await c.check()
            t, _, _ = await c.get_task(task_id, with_events=False)
            assert t.task_id == task_id
    finally:
        out.close()
        await ch.close()
