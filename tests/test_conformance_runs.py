"""Conformance (tests/support/conformance_world.py): a RUN, its events and its REPLY; cancel; typed
events to a client's Watch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support import conformance_world
from tests.support.conformance_world import _drain, _result_events, _run_one, _uid

pytestmark = pytest.mark.timeout(60)

# The shared fixtures (pytest finds a fixture by its name in the test's module).
stubs, mesh, world = conformance_world.stubs, conformance_world.mesh, conformance_world.world


@pytest.mark.parametrize("match", ["result_task_id", "envelope_task_id", "correlation_id"])
async def test_a_reply_is_matched_each_allowed_way_and_frees_the_agent(world, match: str) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("run").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    for n in range(2):  # the second task proves the agent was set free by the first REPLY
        call, run = await _run_one(world, a, agent_type, f"job {n}")
        task_id = run.task.task_id
        a.send(
            a.env(pb.TASK_EVENT, task_id=task_id, event=pb.TaskEvent(task_id=task_id, token=pb.TokenEvent(text="hi")))
        )
        result = pb.TaskResult(state=pb.SUCCEEDED, output=f"done {n}")
        reply = a.env(pb.REPLY, reply=pb.Reply(result=result))
        if match == "result_task_id":
            reply.reply.result.task_id = task_id
        elif match == "envelope_task_id":
            reply.task_id = task_id
        else:
            reply.correlation_id = run.id
        a.send(reply)
        envs = await _drain(call)
        results = _result_events(pb, envs)
        assert len(results) == 1, [e.event for e in envs]
        r = results[0].event.result
        assert r.result.state == pb.SUCCEEDED and r.result.output == f"done {n}" and r.result.task_id == task_id
        assert r.result.agent_id == a.name
    assert not [e for e in a.received if e.type == pb.ERROR]


async def test_a_reply_that_names_no_task_gets_invalid_argument_and_the_task_stays_open(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("noid").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    call, run = await _run_one(world, a, agent_type, "x")
    for reply in (
        a.env(pb.REPLY, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))),
        a.env(pb.REPLY, correlation_id="not-a-run", reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))),
        a.env(pb.REPLY, task_id=run.task_id),
    ):
        a.send(reply)
        err = await a.expect(pb.ERROR, lambda e, r=reply: e.correlation_id == r.id)
        assert err.error.code == "INVALID_ARGUMENT"
        assert ("correlation_id" in err.error.message) or ("reply.result" in err.error.message), err.error.message
    # a REPLY naming two different tasks is refused as well
    two = a.env(
        pb.REPLY, task_id="other", reply=pb.Reply(result=pb.TaskResult(task_id=run.task_id, state=pb.SUCCEEDED))
    )
    a.send(two)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == two.id)
    assert err.error.code == "INVALID_ARGUMENT" and "two tasks" in err.error.message
    # the task is still the agent's: a correct REPLY finishes it
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.FAILED, error="nope"))))
    results = _result_events(pb, await _drain(call))
    assert [r.event.result.result.state for r in results] == [pb.FAILED]
    assert results[0].event.result.result.error == "nope"


async def test_a_reply_for_an_unknown_task_gets_not_found(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    a = world.agent()
    await a.connect(_uid("unk").replace("-", "_"))
    reply = a.env(pb.REPLY, reply=pb.Reply(result=pb.TaskResult(task_id="no-such-task", state=pb.SUCCEEDED)))
    a.send(reply)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == reply.id)
    assert err.error.code == "NOT_FOUND" and "no-such-task" in err.error.message


async def test_event_task_id_may_be_on_the_envelope_only_and_is_required_somewhere(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("evid").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    call, run = await _run_one(world, a, agent_type, "x")
    nowhere = a.env(pb.TASK_EVENT, event=pb.TaskEvent(log=pb.LogEvent(text="lost?")))
    a.send(nowhere)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == nowhere.id)
    assert err.error.code == "INVALID_ARGUMENT" and "event.task_id" in err.error.message
    a.send(a.env(pb.TASK_EVENT, task_id=run.task_id, event=pb.TaskEvent(log=pb.LogEvent(text="found"))))
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    envs = await _drain(call)
    logs = [e.event for e in envs if e.event.HasField("log")]
    assert [(e.log.text, e.task_id) for e in logs] == [("found", run.task_id)]


async def test_a_result_event_from_an_agent_gets_an_error_saying_results_go_in_a_reply(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("resev").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    call, run = await _run_one(world, a, agent_type, "x")
    ev = a.env(
        pb.TASK_EVENT,
        task_id=run.task_id,
        event=pb.TaskEvent(
            task_id=run.task_id, result=pb.ResultEvent(result=pb.TaskResult(task_id=run.task_id, state=pb.SUCCEEDED))
        ),
    )
    a.send(ev)
    err = await a.expect(pb.ERROR, lambda e: e.correlation_id == ev.id)
    assert err.error.code == "INVALID_ARGUMENT" and "REPLY" in err.error.message
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    assert len(_result_events(pb, await _drain(call))) == 1


async def test_any_event_from_the_assigned_agent_means_the_task_is_running(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("runst").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call, run = await _run_one(world, a, agent_type, "x")
    task = await c.stub.GetTask(pb.GetTaskRequest(task_id=run.task_id), timeout=5)
    assert task.task.state == pb.ASSIGNED
    a.send(a.env(pb.TASK_EVENT, task_id=run.task_id, event=pb.TaskEvent(token=pb.TokenEvent(text="t"))))
    deadline = time.monotonic() + 10
    while (await c.stub.GetTask(pb.GetTaskRequest(task_id=run.task_id), timeout=5)).task.state != pb.RUNNING:
        assert time.monotonic() < deadline, "the task did not leave ASSIGNED"
        await asyncio.sleep(0.05)
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    await _drain(call)


async def test_cancel_reaches_the_agent_with_the_task_id(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("cancel").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call, run = await _run_one(world, a, agent_type, "x")
    info = await c.stub.CancelTask(pb.CancelTaskRequest(task_id=run.task_id, reason="enough"), timeout=5)
    assert info.state == pb.CANCELLED
    cancel = await a.expect(pb.CANCEL, lambda e: e.task_id == run.task_id)
    assert cancel.cancel.reason == "enough"
    # the agent's late REPLY for a task settled elsewhere is not an error; the task stays cancelled
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.CANCELLED))))
    results = _result_events(pb, await _drain(call))
    assert [r.event.result.result.state for r in results] == [pb.CANCELLED]


# ---------------------------------------------------------------- typed events to clients
async def test_typed_events_reach_a_client_watch_with_the_agent_type(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("typed").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    watch = c.stub.Watch(pb.WatchRequest())
    await asyncio.sleep(0.3)  # the subscription is made when the call starts on the daemon
    call, run = await _run_one(world, a, agent_type, "x")
    tid = run.task_id
    bodies = [
        pb.TaskEvent(status=pb.StatusEvent(state=pb.RUNNING, text="running")),
        pb.TaskEvent(log=pb.LogEvent(text="a log line")),
        pb.TaskEvent(token=pb.TokenEvent(text="tok")),
        pb.TaskEvent(step=pb.StepEvent(text="step 1"), data={"tool": "write_file"}),
        pb.TaskEvent(
            artifact=pb.ArtifactEvent(artifact=pb.Artifact(path="a.txt", size=1, kind="document"), text="a.txt")
        ),
        pb.TaskEvent(
            approval=pb.ApprovalEvent(request=pb.ApprovalRequest(request_id="r1", tool="run"), text="run it?")
        ),
    ]
    for b in bodies:
        b.task_id = tid
        a.send(a.env(pb.TASK_EVENT, task_id=tid, event=b))
    a.send(
        a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED, output="ok")))
    )
    await _drain(call)
    got: list[Any] = []

    async def read() -> None:
        async for batch in watch:
            got.extend(e.event for e in batch.envelopes if e.task_id == tid)
            if any(e.HasField("result") for e in got):
                return

    await asyncio.wait_for(read(), 15)
    watch.cancel()
    kinds = [e.WhichOneof("body") for e in got]
    assert kinds == ["status", "status", "status", "log", "token", "step", "artifact", "approval", "result"], kinds
    assert [e.status.state for e in got[:2]] == [pb.QUEUED, pb.ASSIGNED]
    assert [e.seq for e in got] == list(range(1, len(got) + 1))
    assert all(e.agent_type == agent_type and e.task_id == tid for e in got)
    assert all(e.agent_id == a.name for e in got[1:])
    assert got[5].data["tool"] == "write_file" and got[6].artifact.artifact.path == "a.txt"
    assert got[7].approval.request.request_id == "r1"
    assert got[8].result.result.output == "ok" and got[8].result.result.state == pb.SUCCEEDED
    # the stored events come back typed the same way
    stored = (await c.stub.GetTask(pb.GetTaskRequest(task_id=tid, with_events=True), timeout=5)).events
    assert [e.WhichOneof("body") for e in stored] == kinds
    assert all(e.agent_type == agent_type for e in stored)
