"""A2A over JSON-RPC + SSE with mutual TLS (docs/a2a.md), driven by a2a-sdk's own client.

A real daemon (`orchgpt serve --a2a-listen 127.0.0.1:0`) with real spawned echo agents; the
clients are a2a-sdk's `create_client` over httpx with the mesh's certificates.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from tests.support.a2a_calls import A2A_ARGS, Caller, a2a_url, final_state, message, stream, tls
from tests.support.mesh import issue

pytestmark = pytest.mark.timeout(90)


async def test_echo_streams_to_completion_and_is_found_after_a_restart(daemon_factory, certs: Path) -> None:
    d = daemon_factory(*A2A_ARGS).start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        client = await alice.client()
        card = await alice.http.get(f"{alice.base}/echo/.well-known/agent-card.json")
        body = card.json()
        assert body["capabilities"]["streaming"] is True
        assert body["supportedInterfaces"][0]["tenant"] == "echo"
        assert "mtlsSecurityScheme" in body["securitySchemes"]["mtls"]

        events = await stream(client, message("hello over a2a", tokens="1"))
        assert events[0].HasField("task") and events[0].task.status.state == a2a.TASK_STATE_SUBMITTED
        task_id = events[0].task.id
        deltas = [e.artifact_update for e in events if e.HasField("artifact_update")]
        assert "".join(p.text for u in deltas for p in u.artifact.parts).split() == [
            "hello",
            "over",
            "a2a",
        ]
        # token deltas append to one artifact (the agent may fold quick deltas into fewer events)
        assert deltas and [u.append for u in deltas] == [False] + [True] * (len(deltas) - 1)
        assert final_state(events) == a2a.TASK_STATE_COMPLETED

        got = await client.get_task(a2a.GetTaskRequest(id=task_id))
        assert got.status.state == a2a.TASK_STATE_COMPLETED
        assert got.artifacts[0].parts[0].text == "hello over a2a"
        assert got.history[0].parts[0].text == "hello over a2a"
        listed = await client.list_tasks(a2a.ListTasksRequest())
        assert task_id in [t.id for t in listed.tasks]
    finally:
        await alice.close()

    assert d.stop() == 0
    d.start()  # the same data dir: the task is in the store
    again = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        got = await (await again.client()).get_task(a2a.GetTaskRequest(id=task_id))
        assert got.status.state == a2a.TASK_STATE_COMPLETED
        assert got.artifacts[0].parts[0].text == "hello over a2a"
    finally:
        await again.close()


async def test_cancel_a_long_task(daemon_factory, certs: Path) -> None:
    d = daemon_factory(*A2A_ARGS).start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        client = await alice.client()
        it = client.send_message(message("slow", delay="30"))
        first = await anext(it)
        task_id = first.task.id
        cancelled = await client.cancel_task(a2a.CancelTaskRequest(id=task_id))
        assert cancelled.status.state == a2a.TASK_STATE_CANCELED
        rest = [ev async for ev in it]  # the stream ends with the cancellation, not after 30 s
        assert final_state(rest) == a2a.TASK_STATE_CANCELED
        got = await client.get_task(a2a.GetTaskRequest(id=task_id))
        assert got.status.state == a2a.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(a2a.CancelTaskRequest(id=task_id))
    finally:
        await alice.close()


def test_the_readme_client_script_streams_echo(daemon_factory, certs: Path, tmp_path: Path) -> None:
    """The README's a2a-sdk script, as printed there, against a running daemon."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"<!-- a2a-echo-script -->\n```python\n(.*?)```", readme, re.S)
    assert m, "README lost its A2A client script"
    script = m.group(1)
    assert len([line for line in script.splitlines() if line.strip()]) <= 15
    (tmp_path / "a2a_echo.py").write_text(script)
    d = daemon_factory(*A2A_ARGS).start()
    out = subprocess.run(
        [sys.executable, "a2a_echo.py", a2a_url(d), "hello", "over", "A2A"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hello", "over", "A2A", "TASK_STATE_COMPLETED"]


async def test_an_approval_is_input_required_and_the_next_message_answers_it(daemon_factory, certs: Path) -> None:
    """A (raw, hand-driven) agent asks for an approval: the A2A task turns INPUT_REQUIRED with the
    request; a message naming the task answers it; the agent gets the decision; the task
    completes."""
    from orchgpt.iac.v1 import iac_pb2 as pb
    from tests.support.stub_agent import StubAgent

    d = daemon_factory(*A2A_ARGS, "--no-spawn").start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    async with StubAgent(d.address, issue(d.certs, "asker", "agent"), "asker", "asker") as agent:
        try:
            client = await alice.client("asker")
            it = client.send_message(message("delete the files"))
            task_id = (await anext(it)).task.id
            run_env = await agent.expect(pb.RUN)
            assert run_env.task.task_id == task_id and run_env.task.input == "delete the files"
            agent.send(
                pb.TASK_EVENT,
                task_id=task_id,
                event=pb.TaskEvent(
                    task_id=task_id,
                    approval=pb.ApprovalEvent(
                        request=pb.ApprovalRequest(request_id="r1", tool="rm", arguments_json='{"path": "x"}'),
                        text="rm x?",
                    ),
                ),
            )
            rest = [ev async for ev in it]  # the stream ends when the task waits for its user
            assert final_state(rest) == a2a.TASK_STATE_INPUT_REQUIRED
            asked = rest[-1].status_update.status.message
            assert asked.parts[0].text == "rm x?" and asked.metadata["request_id"] == "r1"
            got = await client.get_task(a2a.GetTaskRequest(id=task_id))
            assert got.status.state == a2a.TASK_STATE_INPUT_REQUIRED

            answer = message("approve")
            answer.message.task_id = task_id
            cont = client.send_message(answer)
            assert (await anext(cont)).task.id == task_id
            resp = await agent.expect(pb.APPROVAL_RESPONSE)
            assert resp.task_id == task_id and resp.approval_response.request_id == "r1"
            assert resp.approval_response.decision == pb.APPROVE
            assert (await client.get_task(a2a.GetTaskRequest(id=task_id))).status.state == a2a.TASK_STATE_WORKING
            agent.send(
                pb.REPLY,
                task_id=task_id,
                correlation_id=run_env.id,
                reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, output="deleted")),
            )
            rest = [ev async for ev in cont]
            assert final_state(rest) == a2a.TASK_STATE_COMPLETED
            assert [
                p.text for e in rest if e.HasField("artifact_update") for p in e.artifact_update.artifact.parts
            ] == ["deleted"]
            again = message("approve")
            again.message.task_id = task_id
            with pytest.raises(UnsupportedOperationError, match="finished"):
                await stream(client, again)
        finally:
            await alice.close()


def grpc_factory(certs: Path, name: str):  # type: ignore[no-untyped-def]
    """An a2a-sdk client factory for the gRPC binding, over the mesh's mutual TLS."""
    import grpc
    from a2a.client import ClientFactory

    creds = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        (certs / f"{name}-key.pem").read_bytes(),
        (certs / f"{name}.pem").read_bytes(),
    )

    def channel(url: str) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(url, creds)

    return ClientFactory(ClientConfig(grpc_channel_factory=channel, supported_protocol_bindings=["GRPC"]))


async def test_grpc_binding_on_the_mesh_port(daemon_factory, certs: Path) -> None:
    """gRPC A2AService on the daemon's mTLS port: the card from GetExtendedAgentCard, a stream
    to completion, GetTask; another client cannot read the task; the tenant is per type."""
    issue(certs, "bob", "client")
    d = daemon_factory("--a2a-grpc").start()  # no HTTPS listener: gRPC only
    address = f"localhost:{d.port}"
    boot = a2a.AgentCard(
        supported_interfaces=[a2a.AgentInterface(url=address, protocol_binding="GRPC", protocol_version="1.0")],
        capabilities=a2a.AgentCapabilities(extended_agent_card=True, streaming=True),
    )
    alice = grpc_factory(certs, "cli")
    card = await alice.create(boot).get_extended_agent_card(a2a.GetExtendedAgentCardRequest(tenant="echo"))
    assert card.name == "echo" and card.capabilities.streaming
    assert [(i.protocol_binding, i.url, i.tenant) for i in card.supported_interfaces] == [("GRPC", address, "echo")]
    assert card.security_schemes["mtls"].HasField("mtls_security_scheme")
    client = alice.create(card)  # the tenant comes from the card's interface
    events = [ev async for ev in client.send_message(message("over grpc", tokens="1"))]
    task_id = events[0].task.id
    assert final_state(events) == a2a.TASK_STATE_COMPLETED
    deltas = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert "".join(p.text for u in deltas for p in u.artifact.parts).split() == ["over", "grpc"]
    got = await client.get_task(a2a.GetTaskRequest(id=task_id))
    assert got.status.state == a2a.TASK_STATE_COMPLETED and got.artifacts[0].parts[0].text == "over grpc"

    bob = grpc_factory(certs, "bob").create(card)
    with pytest.raises(TaskNotFoundError):
        await bob.get_task(a2a.GetTaskRequest(id=task_id))
    manager_card = await alice.create(boot).get_extended_agent_card(a2a.GetExtendedAgentCardRequest(tenant="manager"))
    with pytest.raises(TaskNotFoundError):  # not under another type's tenant
        await alice.create(manager_card).get_task(a2a.GetTaskRequest(id=task_id))


async def test_list_pages_filters_and_refuses_bad_requests(daemon_factory, certs: Path) -> None:
    """ListTasks pages and filters by state; the tenant and the version are required and
    checked; an oversized body is refused and the daemon keeps serving."""
    d = daemon_factory(*A2A_ARGS).start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        client = await alice.client()
        ids = [(await stream(client, message(f"n{i}")))[0].task.id for i in range(3)]
        first = await client.list_tasks(a2a.ListTasksRequest(page_size=2))
        assert len(first.tasks) == 2 and first.next_page_token
        rest = await client.list_tasks(a2a.ListTasksRequest(page_size=2, page_token=first.next_page_token))
        assert not rest.next_page_token
        assert sorted(t.id for t in [*first.tasks, *rest.tasks]) == sorted(ids)
        done = await client.list_tasks(a2a.ListTasksRequest(status=a2a.TASK_STATE_COMPLETED))
        assert sorted(t.id for t in done.tasks) == sorted(ids) and done.total_size == 3
        working = await client.list_tasks(a2a.ListTasksRequest(status=a2a.TASK_STATE_WORKING))
        assert not working.tasks

        async def rpc(path: str, params: dict, version: str = "1.0") -> dict:
            headers = {"A2A-Version": version}  # (the SDK set it on this httpx client)
            body = {"jsonrpc": "2.0", "id": 7, "method": "ListTasks", "params": params}
            r = await alice.http.post(f"{alice.base}{path}", json=body, headers=headers)
            return r.json()

        assert (await rpc("/", {}))["error"]["message"].startswith("tenant: name the agent type")
        assert "differs" in (await rpc("/echo", {"tenant": "manager"}))["error"]["message"]
        assert "unknown agent type" in (await rpc("/", {"tenant": "NOPE"}))["error"]["message"]
        assert (await rpc("/", {"tenant": "echo"}))["result"]["tasks"]
        no_version = await rpc("/echo", {}, version="")  # a2a-sdk takes it for A2A 0.3
        assert no_version["error"]["code"] == -32009

        big = (
            b'{"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {"x": "'
            + (b"a" * (5 * 1024 * 1024))
            + b'"}}'
        )
        r = await alice.http.post(f"{alice.base}/echo", content=big)
        assert r.status_code == 413

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(6):
                yield b"a" * (1024 * 1024)

        r = await alice.http.post(f"{alice.base}/echo", content=chunks())
        assert r.json()["error"]["message"] == "Payload too large"
        assert (await rpc("/echo", {}))["result"]["tasks"]  # still serving
    finally:
        await alice.close()


# ---------------------------------------------------------------- A2A agents in the mesh


async def test_blocking_send_and_subscribe_across_a_restart(daemon_factory, certs: Path) -> None:
    """message/send without streaming waits for the result; with return_immediately it returns
    the submitted task, which a SubscribeToTask after a daemon crash and restart follows to its
    end (the task was recovered from the store and run again)."""
    d = daemon_factory(*A2A_ARGS).start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        blocking = await create_client(f"{alice.base}/echo", ClientConfig(httpx_client=alice.http, streaming=False))
        [only] = [ev async for ev in blocking.send_message(message("at once"))]
        assert only.task.status.state == a2a.TASK_STATE_COMPLETED
        assert only.task.artifacts[0].parts[0].text == "at once"

        later = message("later", delay="2")
        later.configuration.return_immediately = True
        [sent] = [ev async for ev in blocking.send_message(later)]
        task_id = sent.task.id
        assert sent.task.status.state in (a2a.TASK_STATE_SUBMITTED, a2a.TASK_STATE_WORKING)
    finally:
        await alice.close()
    d.kill()  # a crash: the task is unfinished in the store
    d.start()
    again = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        client = await again.client()
        events = [ev async for ev in client.subscribe(a2a.SubscribeToTaskRequest(id=task_id))]
        assert events[0].task.id == task_id
        assert final_state(events) == a2a.TASK_STATE_COMPLETED
        got = await client.get_task(a2a.GetTaskRequest(id=task_id))
        assert got.artifacts[0].parts[0].text == "later"
        with pytest.raises(UnsupportedOperationError):  # finished: nothing to subscribe to
            async for _ in client.subscribe(a2a.SubscribeToTaskRequest(id=task_id)):
                pass
    finally:
        await again.close()
