"""A2A access: each client sees and touches only its own tasks; agents, unknown CAs and revoked
clients get nothing."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
import httpx
from a2a.client import A2AClientError
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    A2AError,
    InvalidRequestError,
    TaskNotFoundError,
)

from tests.support.a2a_calls import A2A_ARGS, Caller, a2a_url, final_state, message, stream, tls
from tests.support.mesh import issue, make_certs

pytestmark = pytest.mark.timeout(90)


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
    anonymous = Caller(base, ssl.create_default_context(cafile=str(certs / "ca.pem")))  # no certificate
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


async def test_revoking_a_client_ends_its_stream_and_refuses_it(daemon_factory, certs: Path) -> None:
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


async def test_result_files_inline_or_by_url_to_their_owner_only(daemon_factory, certs: Path, tmp_path: Path) -> None:
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
                reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, artifacts=arts)),
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
