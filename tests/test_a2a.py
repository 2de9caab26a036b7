"""A2A over JSON-RPC + SSE with mutual TLS (docs/a2a.md), driven by a2a-sdk's own client.

A real daemon (`orchgpt serve --a2a-listen 127.0.0.1:0`) with real spawned echo agents; the
clients are a2a-sdk's `create_client` over httpx with the mesh's certificates.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
import httpx
from a2a.client import A2AClientError, ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    A2AError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from tests.support.mesh import Daemon, await_for, issue, make_certs, wait_for

pytestmark = pytest.mark.timeout(90)

A2A_ARGS = ("--a2a-listen", "127.0.0.1:0")


def a2a_url(daemon: Daemon) -> str:
    """The A2A base URL the daemon logged (its port is picked at start)."""
    found: list[str] = []

    def logged() -> bool:
        for line in daemon.log().splitlines():
            if '"a2a_serving"' in line:
                found.append(json.loads(line)["base_url"])
                return True
        return False

    wait_for(logged, 20, what="the A2A listener")
    return found[-1]


def tls(certs: Path, name: str, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / f"{name}.pem"), str(certs / f"{name}-key.pem"))
    return ctx


class Caller:
    """One A2A client identity (its own httpx client with its certificate)."""

    def __init__(self, base: str, ctx: ssl.SSLContext) -> None:
        self.base = base
        self.http = httpx.AsyncClient(verify=ctx, timeout=30)

    async def client(self, agent_type: str = "echo"):  # type: ignore[no-untyped-def]
        return await create_client(
            f"{self.base}/{agent_type}", ClientConfig(httpx_client=self.http)
        )

    async def close(self) -> None:
        await self.http.aclose()


def message(text: str, **options: str) -> a2a.SendMessageRequest:
    msg = a2a.Message(role=a2a.ROLE_USER, message_id=f"m-{text[:8]}", parts=[a2a.Part(text=text)])
    if options:
        msg.metadata.update({"options": options})
    return a2a.SendMessageRequest(message=msg)


async def stream(client, req: a2a.SendMessageRequest) -> list[a2a.StreamResponse]:  # type: ignore[no-untyped-def]
    return [ev async for ev in client.send_message(req)]


def final_state(events: list[a2a.StreamResponse]) -> int:
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    return states[-1] if states else a2a.TASK_STATE_UNSPECIFIED


async def test_echo_streams_to_completion_and_is_found_after_a_restart(
    daemon_factory, certs: Path
) -> None:
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
        assert (
            events[0].HasField("task") and events[0].task.status.state == a2a.TASK_STATE_SUBMITTED
        )
        task_id = events[0].task.id
        deltas = [e.artifact_update for e in events if e.HasField("artifact_update")]
        assert "".join(p.text for u in deltas for p in u.artifact.parts).split() == [
            "hello",
            "over",
            "a2a",
        ]
        assert [u.append for u in deltas] == [
            False,
            True,
            True,
        ]  # token deltas append to one artifact
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


async def test_another_client_cannot_see_or_touch_the_task(daemon_factory, certs: Path) -> None:
    issue(certs, "alice", "client")
    issue(certs, "bob", "client")
    d = daemon_factory(*A2A_ARGS).start()
    base = a2a_url(d)
    alice, bob = Caller(base, tls(certs, "alice")), Caller(base, tls(certs, "bob"))
    try:
        a = await alice.client()
        it = a.send_message(message("alice's secret", delay="30"))
        task_id = (await anext(it)).task.id
        b = await bob.client()
        for call in (
            lambda: b.get_task(a2a.GetTaskRequest(id=task_id)),
            lambda: b.cancel_task(a2a.CancelTaskRequest(id=task_id)),
        ):
            with pytest.raises(TaskNotFoundError):  # as for a task that does not exist
                await call()
        with pytest.raises(TaskNotFoundError):
            async for _ in b.subscribe(a2a.SubscribeToTaskRequest(id=task_id)):
                pass
        assert task_id not in [t.id for t in (await b.list_tasks(a2a.ListTasksRequest())).tasks]
        # answering alice's task (a message naming its task_id) is refused to bob too
        answer = message("approve")
        answer.message.task_id = task_id
        with pytest.raises(TaskNotFoundError):
            await stream(b, answer)
        # alice's task is not under another type's tenant either
        with pytest.raises(TaskNotFoundError):
            await (await alice.client("manager")).get_task(a2a.GetTaskRequest(id=task_id))
        # alice sees it, still running
        assert (await a.get_task(a2a.GetTaskRequest(id=task_id))).status.state in (
            a2a.TASK_STATE_SUBMITTED,
            a2a.TASK_STATE_WORKING,
        )
        await a.cancel_task(a2a.CancelTaskRequest(id=task_id))
        await it.aclose()
    finally:
        await alice.close()
        await bob.close()


async def test_an_agent_certificate_cannot_submit(daemon_factory, certs: Path) -> None:
    issue(certs, "robot", "agent")
    d = daemon_factory(*A2A_ARGS).start()
    robot = Caller(a2a_url(d), tls(certs, "robot"))
    try:
        with pytest.raises(InvalidRequestError, match="permission denied"):
            await stream(await robot.client(), message("hi"))
    finally:
        await robot.close()


async def test_a_client_without_a_ca_signed_certificate_gets_nothing(
    daemon_factory, certs: Path, tmp_path: Path
) -> None:
    d = daemon_factory(*A2A_ARGS).start()
    base = a2a_url(d)
    other = make_certs(tmp_path / "other-ca")  # a CA the mesh does not trust
    rogue = Caller(base, tls(other, "cli", ca=certs / "ca.pem"))  # trusts the daemon, unknown to it
    anonymous = Caller(
        base, ssl.create_default_context(cafile=str(certs / "ca.pem"))
    )  # no certificate
    try:
        for caller in (rogue, anonymous):
            with pytest.raises((A2AClientError, httpx.HTTPError)):
                await caller.client()  # the card
            with pytest.raises(httpx.HTTPError):
                await caller.http.post(
                    f"{base}/echo",
                    json={
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "ListTasks",
                        "params": {"tenant": "echo"},
                    },
                    headers={"A2A-Version": "1.0"},
                )
    finally:
        await rogue.close()
        await anonymous.close()
    assert re.search(r'"a2a_serving"', d.log())


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


async def test_an_approval_is_input_required_and_the_next_message_answers_it(
    daemon_factory, certs: Path
) -> None:
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
                        request=pb.ApprovalRequest(
                            request_id="r1", tool="rm", arguments_json='{"path": "x"}'
                        ),
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
            assert (
                await client.get_task(a2a.GetTaskRequest(id=task_id))
            ).status.state == a2a.TASK_STATE_WORKING
            agent.send(
                pb.REPLY,
                task_id=task_id,
                correlation_id=run_env.id,
                reply=pb.Reply(
                    result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, output="deleted")
                ),
            )
            rest = [ev async for ev in cont]
            assert final_state(rest) == a2a.TASK_STATE_COMPLETED
            assert [
                p.text
                for e in rest
                if e.HasField("artifact_update")
                for p in e.artifact_update.artifact.parts
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

    return ClientFactory(
        ClientConfig(grpc_channel_factory=channel, supported_protocol_bindings=["GRPC"])
    )


async def test_grpc_binding_on_the_mesh_port(daemon_factory, certs: Path) -> None:
    """gRPC A2AService on the daemon's mTLS port: the card from GetExtendedAgentCard, a stream
    to completion, GetTask; another client cannot read the task; the tenant is per type."""
    issue(certs, "bob", "client")
    d = daemon_factory("--a2a-grpc").start()  # no HTTPS listener: gRPC only
    address = f"localhost:{d.port}"
    boot = a2a.AgentCard(
        supported_interfaces=[
            a2a.AgentInterface(url=address, protocol_binding="GRPC", protocol_version="1.0")
        ],
        capabilities=a2a.AgentCapabilities(extended_agent_card=True, streaming=True),
    )
    alice = grpc_factory(certs, "cli")
    card = await alice.create(boot).get_extended_agent_card(
        a2a.GetExtendedAgentCardRequest(tenant="echo")
    )
    assert card.name == "echo" and card.capabilities.streaming
    assert [(i.protocol_binding, i.url, i.tenant) for i in card.supported_interfaces] == [
        ("GRPC", address, "echo")
    ]
    assert card.security_schemes["mtls"].HasField("mtls_security_scheme")
    client = alice.create(card)  # the tenant comes from the card's interface
    events = [ev async for ev in client.send_message(message("over grpc", tokens="1"))]
    task_id = events[0].task.id
    assert final_state(events) == a2a.TASK_STATE_COMPLETED
    deltas = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert "".join(p.text for u in deltas for p in u.artifact.parts).split() == ["over", "grpc"]
    got = await client.get_task(a2a.GetTaskRequest(id=task_id))
    assert (
        got.status.state == a2a.TASK_STATE_COMPLETED
        and got.artifacts[0].parts[0].text == "over grpc"
    )

    bob = grpc_factory(certs, "bob").create(card)
    with pytest.raises(TaskNotFoundError):
        await bob.get_task(a2a.GetTaskRequest(id=task_id))
    manager_card = await alice.create(boot).get_extended_agent_card(
        a2a.GetExtendedAgentCardRequest(tenant="manager")
    )
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
        rest = await client.list_tasks(
            a2a.ListTasksRequest(page_size=2, page_token=first.next_page_token)
        )
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
def start_upper(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The external agent (a2a-sdk only) in its own process; its base URL."""
    port_file = tmp_path / "upper.port"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.a2a_upper", str(port_file)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "upper.log", "wb"),
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    wait_for(lambda: port_file.exists() or proc.poll() is not None, 20, what="the A2A agent")
    assert proc.poll() is None, (tmp_path / "upper.log").read_text()
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def start_proxy(d: Daemon, url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    issue(d.certs, "upper", "agent")
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchgpt",
            "a2a",
            "add",
            "upper",
            url,
            "--address",
            d.address,
            "--certs",
            str(d.certs),
            "--workdir",
            str(tmp_path / "proxy"),
        ],
        cwd=tmp_path,
        stdout=open(tmp_path / "proxy.log", "wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


async def test_an_external_a2a_agent_joins_the_mesh(daemon_factory, tmp_path: Path) -> None:
    from orchgpt.models import Action, ApprovalDecision, ApprovalResponse, Command, EventKind

    upper, url = start_upper(tmp_path)
    d = daemon_factory().start()
    proxy = start_proxy(d, url, tmp_path)
    try:
        async with d.client() as mesh:

            async def registered() -> bool:
                assert proxy.poll() is None, (tmp_path / "proxy.log").read_text()
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 20, what="the proxy agent to register")
            [info] = await mesh.list_agents("upper")
            assert "shout" in info.capabilities  # the card's skills

            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "hello"))]
            result = events[-1].result
            assert result is not None and result.ok and result.output == "HELLO"
            assert [e.text for e in events if e.kind == EventKind.TOKEN] == ["HE", "LLO"]
            assert "upper-casing" in [e.text for e in events if e.kind == EventKind.LOG]

            # INPUT_REQUIRED becomes an approval request; its feedback is the next A2A message
            seen = []
            async for ev in mesh.submit(Command("upper", Action.RUN, "ask")):
                seen.append(ev)
                if ev.kind == EventKind.APPROVAL and ev.approval is not None:
                    assert ev.text == "what shall I shout?"
                    await mesh.approve(
                        ev.task_id,
                        ApprovalResponse(
                            ev.approval.request_id,
                            ApprovalDecision.FEEDBACK,
                            feedback="quiet please",
                        ),
                    )
            assert seen[-1].result is not None and seen[-1].result.output == "QUIET PLEASE"

            # a mesh CANCEL cancels the remote task too
            async for ev in mesh.submit(Command("upper", Action.RUN, "slow")):
                if ev.text == "sleeping":
                    await mesh.cancel(ev.task_id)
            assert ev.result is not None and ev.result.state == "cancelled"
        async with httpx.AsyncClient(timeout=10) as http:
            remote = await create_client(url, ClientConfig(httpx_client=http))

            async def remote_cancelled() -> bool:
                tasks = (await remote.list_tasks(a2a.ListTasksRequest())).tasks
                slow = [t for t in tasks if t.history and t.history[0].parts[0].text == "slow"]
                return bool(slow) and slow[0].status.state == a2a.TASK_STATE_CANCELED

            await await_for(remote_cancelled, 10, what="the remote task to be cancelled")
    finally:
        for p in (proxy, upper):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


async def test_blocking_send_and_subscribe_across_a_restart(daemon_factory, certs: Path) -> None:
    """message/send without streaming waits for the result; with return_immediately it returns
    the submitted task, which a SubscribeToTask after a daemon crash and restart follows to its
    end (the task was recovered from the store and run again)."""
    d = daemon_factory(*A2A_ARGS).start()
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        blocking = await create_client(
            f"{alice.base}/echo", ClientConfig(httpx_client=alice.http, streaming=False)
        )
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


async def test_revoking_a_client_ends_its_stream_and_refuses_it(
    daemon_factory, certs: Path
) -> None:
    issue(certs, "carol", "client")
    d = daemon_factory(*A2A_ARGS, "--crl-poll-interval", "0.5").start()
    carol = Caller(a2a_url(d), tls(certs, "carol"))
    root = Path(__file__).resolve().parents[1]
    try:
        client = await carol.client()
        it = client.send_message(message("long", delay="30"))
        task_id = (await anext(it)).task.id
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchgpt", "certs", "revoke", "carol", "--dir", str(certs)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert r.returncode == 0, r.stderr
        with pytest.raises(A2AError, match="certificate revoked"):  # the open stream ends
            async for _ in it:
                pass
        with pytest.raises(InvalidRequestError, match="certificate revoked"):
            await client.get_task(a2a.GetTaskRequest(id=task_id))
    finally:
        await carol.close()


async def test_result_files_inline_or_by_url_to_their_owner_only(
    daemon_factory, certs: Path, tmp_path: Path
) -> None:
    """A result's files: a small one inline, a large one as a URL on the listener that only the
    task's owner can fetch; a file this daemon does not hold stays a name."""
    from orchgpt.iac.v1 import iac_pb2 as pb
    from tests.support.stub_agent import StubAgent

    issue(certs, "bob", "client")
    d = daemon_factory(*A2A_ARGS, "--no-spawn").start()
    base = a2a_url(d)
    alice, bob = Caller(base, tls(certs, "cli")), Caller(base, tls(certs, "bob"))
    async with StubAgent(d.address, issue(d.certs, "filer", "agent"), "filer", "filer") as agent:
        try:
            client = await alice.client("filer")
            it = client.send_message(message("make files"))
            task_id = (await anext(it)).task.id
            run_env = await agent.expect(pb.RUN)
            ws = tmp_path / "data" / "workspaces" / task_id
            (ws / "out").mkdir(parents=True)
            (ws / "out" / "small.txt").write_text("small file")
            big = bytes(range(256)) * 400  # 100 KiB
            (ws / "big.bin").write_bytes(big)
            arts = [pb.Artifact(path=p, size=1) for p in ("out/small.txt", "big.bin", "gone.txt")]
            agent.send(
                pb.REPLY,
                task_id=task_id,
                correlation_id=run_env.id,
                reply=pb.Reply(
                    result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, artifacts=arts)
                ),
            )
            assert final_state([ev async for ev in it]) == a2a.TASK_STATE_COMPLETED

            got = await client.get_task(a2a.GetTaskRequest(id=task_id))
            files = {a.name: a.parts[0] for a in got.artifacts}
            assert files["out/small.txt"].raw == b"small file"
            assert files["out/small.txt"].media_type == "text/plain"
            url = files["big.bin"].url
            assert url == f"{base}/filer/artifacts/{task_id}/big.bin"
            assert files["gone.txt"].text == "gone.txt"  # not here: only its name
            r = await alice.http.get(url)
            assert r.status_code == 200 and r.content == big
            assert (await bob.http.get(url)).status_code == 404  # not bob's task
            elsewhere = await alice.http.get(f"{base}/echo/artifacts/{task_id}/big.bin")
            assert elsewhere.status_code == 404  # not under another type
            for bad in ("..%2F..%2Fcerts%2Fca-key.pem", "gone.txt"):
                r = await alice.http.get(f"{base}/filer/artifacts/{task_id}/{bad}")
                assert r.status_code in (400, 404), (bad, r.status_code)
        finally:
            await alice.close()
            await bob.close()


class Webhook:
    """An HTTP receiver for push notifications (its first POST is answered 500)."""

    def __init__(self) -> None:
        self.got: list[tuple[int, str, dict]] = []  # (status answered, token, body)

    async def app(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        token = dict(scope["headers"]).get(b"x-a2a-notification-token", b"").decode()
        status = 500 if not self.got else 200
        self.got.append((status, token, json.loads(body)))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def states(self) -> list[str]:
        return [b["statusUpdate"]["status"]["state"] for s, _, b in self.got if s == 200]


async def test_push_notifications_on_each_change_of_state(daemon_factory, certs: Path) -> None:
    import socket

    import uvicorn

    from orchgpt.a2a.http import _QuietServer

    issue(certs, "bob", "client")
    d = daemon_factory(*A2A_ARGS, "--a2a-push", "any").start()
    hook = Webhook()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _QuietServer(
        uvicorn.Config(hook.app, lifespan="off", log_config=None, interface="asgi3")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    bob = Caller(alice.base, tls(certs, "bob"))
    try:
        client = await alice.client()
        body = (await alice.http.get(f"{alice.base}/echo/.well-known/agent-card.json")).json()
        assert body["capabilities"]["pushNotifications"] is True
        req = message("pushed", delay="1")
        cfg = req.configuration.task_push_notification_config
        cfg.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        cfg.token = "tok-1"
        events = await stream(client, req)
        task_id = events[0].task.id
        assert final_state(events) == a2a.TASK_STATE_COMPLETED
        await await_for(lambda: "TASK_STATE_COMPLETED" in hook.states(), 30, what="the last push")
        assert hook.got[0][0] == 500  # the first try failed: it was retried
        assert hook.got[1][2] == hook.got[0][2]
        assert {tok for _, tok, _ in hook.got} == {"tok-1"}
        states = hook.states()
        assert states[-1] == "TASK_STATE_COMPLETED" and "TASK_STATE_WORKING" in states
        assert len(states) == len(set(states))  # changes of state only
        assert all(b["statusUpdate"]["taskId"] == task_id for _, _, b in hook.got)

        got = await client.get_task_push_notification_config(
            a2a.GetTaskPushNotificationConfigRequest(task_id=task_id, id="push-1")
        )
        assert got.url == cfg.url and got.token == "tok-1"
        with pytest.raises(TaskNotFoundError):  # bob cannot read alice's webhook or its token
            await (await bob.client()).get_task_push_notification_config(
                a2a.GetTaskPushNotificationConfigRequest(task_id=task_id, id="push-1")
            )
    finally:
        await alice.close()
        await bob.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_push_urls_are_screened() -> None:
    from orchgpt.a2a.push import PushNotifier, PushRefused

    public, anything = (
        PushNotifier(None, "public", dict().get),
        PushNotifier(None, "any", dict().get),
    )
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://10.0.0.1/"):
        with pytest.raises(PushRefused, match="loopback, private"):
            await public.check(a2a.TaskPushNotificationConfig(url=url))
        await anything.check(a2a.TaskPushNotificationConfig(url=url))
    for url in ("ftp://example.com/", "file:///etc/passwd", "not a url"):
        with pytest.raises(PushRefused, match="not an http"):
            await anything.check(a2a.TaskPushNotificationConfig(url=url))


async def test_the_daemon_runs_the_proxy_of_a_configured_a2a_agent(
    daemon_factory, tmp_path: Path
) -> None:
    from orchgpt.models import Action, Command

    upper, url = start_upper(tmp_path)
    d = daemon_factory("--a2a-agents", f"upper={url}").start()
    try:
        async with d.client() as mesh:

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 20, what="the daemon's proxy agent to register")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "from config"))]
            assert events[-1].result is not None and events[-1].result.output == "FROM CONFIG"

        def pids() -> list[int]:
            return [
                json.loads(line)["pid"]
                for line in d.log().splitlines()
                if '"a2a_proxy_started"' in line
            ]

        assert len(pids()) == 1
        killed_ms = int(time.time() * 1000)
        os.kill(pids()[0], signal.SIGKILL)  # a proxy that dies is started again
        wait_for(lambda: len(pids()) == 2, 20, what="the proxy to be restarted")
        async with d.client() as mesh:

            async def reconnected() -> bool:
                return any(a.connected_ms >= killed_ms for a in await mesh.list_agents("upper"))

            await await_for(reconnected, 20, what="the restarted proxy to register")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "again"))]
            assert events[-1].result is not None and events[-1].result.output == "AGAIN"
        assert d.stop() == 0
        with pytest.raises(ProcessLookupError):  # stopped with the daemon
            os.kill(pids()[-1], 0)
    finally:
        upper.terminate()
        upper.wait(10)
