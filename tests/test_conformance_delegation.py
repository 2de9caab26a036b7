"""Conformance (tests/support/conformance_world.py): reflection; delegation, approval and
terminate; timeouts and shutdown of an in-process daemon."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.support import conformance_world
from tests.support.conformance_world import RawAgent, Submitted, _drain, _result_events, _run_one, _uid

pytestmark = pytest.mark.timeout(60)

# The shared fixtures (pytest finds a fixture by its name in the test's module).
stubs, mesh, world, inproc = (
    conformance_world.stubs,
    conformance_world.mesh,
    conformance_world.world,
    conformance_world.inproc,
)


# ---------------------------------------------------------------- reflection
async def test_reflection_v1_and_v1alpha_list_the_services_over_mtls(world) -> None:  # type: ignore[no-untyped-def]
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as r

    ch = world.client().channel
    want = {
        "orchgpt.iac.v1.Mesh",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    for version in ("v1", "v1alpha"):
        # The two versions' messages are the same on the wire; only the service name differs.
        info = ch.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=r.ServerReflectionRequest.SerializeToString,
            response_deserializer=r.ServerReflectionResponse.FromString,
        )

        async def reqs():  # type: ignore[no-untyped-def]
            yield r.ServerReflectionRequest(list_services="")
            yield r.ServerReflectionRequest(file_containing_symbol="orchgpt.iac.v1.Mesh")

        out = [x async for x in info(reqs(), timeout=5)]
        assert want <= {s.name for s in out[0].list_services_response.service}, version
        fd = descriptor_pb2.FileDescriptorProto.FromString(out[1].file_descriptor_response.file_descriptor_proto[0])
        assert fd.package == "orchgpt.iac.v1" and "TaskEvent" in [m.name for m in fd.message_type]


# ---------------------------------------------------------------- delegation, approval, terminate
async def test_delegate_task_runs_a_sub_task_and_its_result_comes_back_as_a_reply(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    parent_type, child_type = _uid("par").replace("-", "_"), _uid("chi").replace("-", "_")
    p, ch = world.agent(), world.agent()
    await p.connect(parent_type)
    await ch.connect(child_type)
    call, run = await _run_one(world, p, parent_type, "plan")
    # delegating under a task one does not run is refused
    stray = p.env(pb.DELEGATE_TASK, task=pb.TaskSpec(agent_type=child_type, input="x", parent_task_id="not-mine"))
    p.send(stray)
    err = await p.expect(pb.ERROR, lambda e: e.correlation_id == stray.id)
    assert err.error.code == "PERMISSION_DENIED"
    delegate = p.env(
        pb.DELEGATE_TASK,
        task_id=run.task_id,
        task=pb.TaskSpec(agent_type=child_type, action=pb.RUN_ACTION, input="sub"),
    )
    p.send(delegate)
    sub = await ch.expect(pb.RUN)
    assert sub.task.parent_task_id == run.task_id and sub.task.input == "sub"
    ch.send(
        ch.env(
            pb.REPLY, correlation_id=sub.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED, output="sub done"))
        )
    )
    back = await p.expect(pb.REPLY, lambda e: e.correlation_id == delegate.id)
    assert back.reply.result.output == "sub done" and back.reply.result.task_id == sub.task_id
    p.send(p.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    envs = await _drain(call)
    # the parent's watchers saw the sub-task's events too
    assert any(e.task_id == sub.task_id for e in envs)


async def test_an_approval_event_is_answered_with_approval_response(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("appr").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call, run = await _run_one(world, a, agent_type, "x")
    a.send(
        a.env(
            pb.TASK_EVENT,
            task_id=run.task_id,
            event=pb.TaskEvent(
                approval=pb.ApprovalEvent(
                    request=pb.ApprovalRequest(request_id="req-1", tool="shell", summary="ls"), text="ls"
                )
            ),
        )
    )
    await c.stub.Approve(
        pb.ApproveRequest(
            task_id=run.task_id, response=pb.ApprovalResponse(request_id="req-1", decision=pb.APPROVE_NEXT, count=3)
        ),
        timeout=5,
    )
    resp = await a.expect(pb.APPROVAL_RESPONSE)
    assert resp.task_id == run.task_id
    assert (resp.approval_response.request_id, resp.approval_response.decision, resp.approval_response.count) == (
        "req-1",
        pb.APPROVE_NEXT,
        3,
    )
    a.send(a.env(pb.REPLY, correlation_id=run.id, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED))))
    await _drain(call)


async def test_terminate_reaches_every_agent_of_the_type(world) -> None:  # type: ignore[no-untyped-def]
    pb = world.pb
    agent_type = _uid("term").replace("-", "_")
    a = world.agent()
    await a.connect(agent_type)
    c = world.client()
    call = c.stub.Submit(pb.SubmitRequest(command=pb.Command(agent_type=agent_type, action=pb.TERMINATE_ACTION)))
    envs = await _drain(Submitted(call))
    assert _result_events(pb, envs)[0].event.result.result.state == pb.SUCCEEDED
    term = await a.expect(pb.TERMINATE)
    assert term.terminate.reason


async def test_no_register_in_time_gets_an_error_envelope_then_deadline_exceeded(stubs, inproc) -> None:  # type: ignore[no-untyped-def]
    pb, pb_grpc = stubs
    srv, d = inproc
    srv.servicer.first_message_timeout = 0.5
    a = RawAgent(pb, pb_grpc, d, _uid("late"))
    try:
        a._tasks.append(asyncio.create_task(a._read(a.stub.Connect(a._requests()))))  # and send nothing
        code, details = await a.ends()
        err = await a.expect(pb.ERROR)
        assert err.error.code == "DEADLINE_EXCEEDED" and "no REGISTER" in err.error.message
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no REGISTER" in details
    finally:
        await a.close()


async def test_a_daemon_shutting_down_ends_agent_streams_with_an_error_then_unavailable(stubs, inproc) -> None:  # type: ignore[no-untyped-def]
    pb, pb_grpc = stubs
    srv, d = inproc
    a = RawAgent(pb, pb_grpc, d, _uid("bye"))
    try:
        await a.connect("bye")
        await srv.stop(grace=0)
        code, details = await a.ends()
        err = await a.expect(pb.ERROR)
        assert err.error.code == "UNAVAILABLE" and "shutting down" in err.error.message
        assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
    finally:
        await a.close()
