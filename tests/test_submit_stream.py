"""SubmitStream (issue 17): many submissions on one call, against a real daemon, a real agentd echo
agent and mutual TLS: results, idempotency, authorization, bad input, and a client that stops
reading."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orchgpt.certs import paths_for
from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import Action, Command, EventKind, TaskEvent, TaskState
from orchgpt.tls import secure_channel
from tests.support.mesh import AgentProc, Daemon, await_for, issue, make_certs, start_agent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, AgentProc]]:
    """One daemon (no spawning: every task runs on the one hand-started echo agent)."""
    tmp = tmp_path_factory.mktemp("submit-stream")
    certs = make_certs(tmp / "certs")
    for name in ("alice", "bob"):
        issue(certs, name, "client")
    d = Daemon(workdir=tmp, certs=certs, data_dir=tmp / "data", args=["--no-spawn"]).start()
    echo = start_agent(d, "echo-1", "echo")
    try:
        yield d, echo
    finally:
        echo.stop()
        d.kill()


def client(d: Daemon, name: str = "alice", sender: str | None = None) -> MeshClient:
    return MeshClient(d.address, paths_for(d.certs, name), timeout=10, name=sender)


async def ready(d: Daemon) -> None:
    async with client(d) as c:
        await await_for(lambda: c.list_agents("echo"), timeout=30, what="the echo agent to register")


async def test_many_tasks_through_one_stream_all_succeed(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await ready(d)
    async with client(d) as c:
        async with c.submit_stream(results_only=True) as s:
            futures = s.submit_many(Command("echo", Action.RUN, f"many {i}") for i in range(300))
            results = await asyncio.wait_for(asyncio.gather(*futures), 90)
        assert [r.result.output if r.result else None for r in results] == [f"many {i}" for i in range(300)]
        assert {r.result.state if r.result else None for r in results} == {TaskState.SUCCEEDED}
        # stored, finished, with their output
        task, _, _ = await c.get_task(results[-1].task_id, with_events=False)
        assert task.state == TaskState.SUCCEEDED and task.result is not None and task.result.output == "many 299"
        # every event, without results_only: the first one acknowledges the task (QUEUED)
        seen: list[TaskEvent] = []
        async with c.submit_stream(on_event=seen.append) as s:
            r = await asyncio.wait_for(s.run(Command("echo", Action.RUN, "all events")), 30)
        assert r.result is not None and r.result.output == "all events"
        mine = [(e.kind, e.state) for e in seen if e.task_id == r.task_id]
        assert mine[0] == (EventKind.STATUS, TaskState.QUEUED) and (EventKind.STATUS, TaskState.ASSIGNED) in mine


async def test_a_resubmitted_task_id_does_not_run_twice(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await ready(d)
    async with client(d) as c:
        async with c.submit_stream(results_only=True) as s:
            first = s.submit(Command("echo", Action.RUN, "once", task_id="idem-1"))
            again = s.submit(Command("echo", Action.RUN, "twice?", task_id="idem-1"))  # same stream, in flight
            a, b = await asyncio.wait_for(asyncio.gather(first, again), 30)
        async with c.submit_stream(results_only=True) as s:  # another stream, after it finished
            later = await asyncio.wait_for(s.run(Command("echo", Action.RUN, "thrice?", task_id="idem-1")), 30)
        assert [x.result.output if x.result else None for x in (a, b, later)] == ["once"] * 3
        _, events, _ = await c.get_task("idem-1")
        assigned = [e for e in events if e.kind == EventKind.STATUS and e.state == TaskState.ASSIGNED]
        results = [e for e in events if e.kind == EventKind.RESULT]
        assert len(assigned) == 1 and len(results) == 1


async def test_a_stream_ended_early_leaves_its_tasks_running(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await ready(d)
    async with client(d) as c:
        queued = asyncio.Event()
        s = c.submit_stream(on_event=lambda ev: queued.set())
        await s.__aenter__()
        futures = s.submit_many(Command("echo", Action.RUN, f"left {i}", task_id=f"left-{i}") for i in range(5))
        await asyncio.wait_for(queued.wait(), 20)  # accepted (committed) before the call ends
        s.cancel()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)  # a RESULT, or CANCELLED: not waited for
        assert all(isinstance(o, TaskEvent) or (isinstance(o, ClientError) and o.code == "CANCELLED") for o in outcomes)

        async def all_done() -> bool:
            tasks = [(await c.get_task(f"left-{i}", with_events=False))[0] for i in range(5)]
            return all(t.state == TaskState.SUCCEEDED for t in tasks)

        await await_for(all_done, timeout=30, what="the tasks of the ended stream to finish")


async def test_an_agent_certificate_cannot_use_it(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    paths = issue(d.certs, "sneaky-agent-2", "agent")
    c = MeshClient(d.address, paths)
    try:
        with pytest.raises(ClientError) as ei:
            async with c.submit_stream(results_only=True) as s:
                await asyncio.wait_for(s.run(Command("echo", Action.RUN, "x")), 20)
        assert ei.value.code == "PERMISSION_DENIED" and "client role needed" in str(ei.value)
    finally:
        await c.close()


async def test_a_client_cannot_submit_as_someone_else(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await ready(d)
    async with client(d, "alice", sender="bob") as c:
        with pytest.raises(ClientError) as ei:
            async with c.submit_stream(results_only=True) as s:
                await asyncio.wait_for(s.run(Command("echo", Action.RUN, "as bob")), 20)
        assert ei.value.code == "PERMISSION_DENIED" and "does not match the certificate identity" in str(ei.value)
    # nor take over another client's task id (ALREADY_EXISTS), while its own stream goes on
    async with client(d, "alice") as alice:
        async with alice.submit_stream(results_only=True) as s:
            await asyncio.wait_for(s.run(Command("echo", Action.RUN, "alice's", task_id="owned-by-alice")), 30)
    async with client(d, "bob") as bob:
        async with bob.submit_stream(results_only=True) as s:
            with pytest.raises(ClientError) as ei:
                await asyncio.wait_for(s.run(Command("echo", Action.RUN, "bob's", task_id="owned-by-alice")), 20)
            assert ei.value.code == "ALREADY_EXISTS"
            ok = await asyncio.wait_for(s.run(Command("echo", Action.RUN, "bob goes on")), 30)
            assert ok.result is not None and ok.result.output == "bob goes on"


async def test_bad_submissions_get_an_error_and_the_stream_goes_on(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await ready(d)
    async with client(d) as c:
        async with c.submit_stream(results_only=True) as s:
            empty = s.submit(Command("", Action.RUN, "no type"))
            unknown = s.submit(Command("no-such-type", Action.RUN, "x"))
            bad_id = s.submit(Command("echo", Action.RUN, "x", task_id="has space"))
            good = s.submit(Command("echo", Action.RUN, "still fine"))
            outcomes = await asyncio.wait_for(asyncio.gather(empty, unknown, bad_id, return_exceptions=True), 20)
            ok = await asyncio.wait_for(good, 30)
        codes = [(o.code, str(o)) for o in outcomes if isinstance(o, ClientError)]
        assert len(codes) == 3, outcomes
        assert codes[0][0] == "INVALID_ARGUMENT" and "agent type" in codes[0][1]
        assert codes[1][0] == "NOT_FOUND" and "no-such-type" in codes[1][1]
        assert codes[2][0] == "INVALID_ARGUMENT" and "invalid task id" in codes[2][1]
        assert ok.result is not None and ok.result.output == "still fine"
    # on the wire: a submission without a task id, then one with a NUL byte; an ERROR each, named
    async with secure_channel(d.address, paths_for(d.certs, "alice")) as ch:
        call = pb_grpc.MeshStub(ch).SubmitStream()
        no_id = pb.SubmitRequest(command=pb.Command(agent_type="echo", action=pb.RUN_ACTION, input="x"))
        nul = pb.SubmitRequest(command=pb.Command(agent_type="echo", action=pb.RUN_ACTION, task_id="a\x00b"))
        fine = pb.SubmitRequest(command=pb.Command(agent_type="echo", action=pb.RUN_ACTION, input="y", task_id="w1"))
        await call.write(pb.SubmitBatch(submissions=[no_id, nul, fine]))
        await call.done_writing()
        envs = [e async for b in call for e in b.envelopes]
        assert await call.code() == grpc.StatusCode.OK
    errors = [e.error for e in envs if e.HasField("error")]
    assert [e.code for e in errors] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"]
    assert "command.task_id is required" in errors[0].message and "NUL" in errors[1].message
    assert [e.event.result.result.output for e in envs if e.HasField("event") and e.event.HasField("result")] == ["y"]
    # Submit keeps its own form: results_only is SubmitStream's
    async with secure_channel(d.address, paths_for(d.certs, "alice")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in pb_grpc.MeshStub(ch).Submit(
                pb.SubmitRequest(command=pb.Command(agent_type="echo", action=pb.RUN_ACTION), results_only=True)
            ):
                pass
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "results_only" in (ei.value.details() or "")
    async with client(d) as c:
        assert await c.list_agents("echo")  # the daemon is fine


async def test_a_client_that_stops_reading_is_cut_not_buffered(tmp_path: Path) -> None:
    """Submissions of 64 KiB echo tasks, every event, none read: once the client's transport holds no
    more, the daemon pauses reading submissions, and with more than max_pending_events waiting ends the
    stream with RESOURCE_EXHAUSTED; it stays up."""
    certs = make_certs(tmp_path / "certs")
    d = Daemon(
        workdir=tmp_path, certs=certs, data_dir=tmp_path / "data", args=["--no-spawn", "--max-pending-events", "100"]
    ).start()
    echo = start_agent(d, "echo-slow", "echo")
    try:
        await ready_cli(d)
        async with secure_channel(d.address, paths_for(certs, "cli")) as ch:
            call = pb_grpc.MeshStub(ch).SubmitStream()
            sent = 0
            for frame in range(400):  # 20 submissions of 64 KiB a frame (a frame stays under 4 MiB)
                subs = [
                    pb.SubmitRequest(
                        command=pb.Command(
                            agent_type="echo", action=pb.RUN_ACTION, input="z" * 65536, task_id=f"slow-{frame}-{i}"
                        )
                    )
                    for i in range(20)
                ]
                # the daemon stops reading (flow control holds the write: not cancelled, which would
                # cancel the call), or has cut the stream
                write = asyncio.ensure_future(call.write(pb.SubmitBatch(submissions=subs)))
                await asyncio.wait([write], timeout=5)
                if not write.done() or write.exception() is not None:
                    break
                sent += 1

            async def drain() -> None:
                async for _ in call:
                    pass

            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await asyncio.wait_for(drain(), 30)
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "client too slow" in (ei.value.details() or "") or "not reading" in (ei.value.details() or "")
        await await_for(lambda: "submit_stream_closed" in d.log(), timeout=10, what="the stream's closing line")
        (closed,) = [json.loads(line) for line in d.log().splitlines() if '"submit_stream_closed"' in line]
        assert "client too slow" in closed["reason"] or "not reading" in closed["reason"], closed
        assert closed["submitted"] < 20 * 400, closed  # it stopped taking submissions
        async with d.client() as c:
            assert await c.list_agents("echo")  # the daemon (and its agent) are fine
    finally:
        echo.stop()
        d.kill()


async def ready_cli(d: Daemon) -> None:
    async with d.client() as c:
        await await_for(lambda: c.list_agents("echo"), timeout=30, what="the echo agent to register")
