"""Issue 10 findings 1-3 and issue 11 finding 9, against a real daemon, real agentd and real TLS:

1. an agent that reports workspace "/" cannot read the CA key (or any file) through FetchArtifact;
2. an agent cannot make another agent run, stop, terminate or approve anything;
3. clients see and act on their own tasks and sessions only (an admin on all), agents on theirs;
9. a COMMAND to an agent gets its REPLY back, and only the asker gets it (ctx.ask).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orchgpt.certs import CA, CertPaths, paths_for
from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.models import Action, ApprovalDecision, ApprovalResponse, Command, EventKind, TaskEvent
from orchgpt.tls import secure_channel
from tests.support.mesh import AgentProc, Daemon, await_for, issue, make_certs, start_agent
from tests.support.stub_agent import StubAgent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, AgentProc]]:
    """One daemon (no spawning) and one real echo agent, `victim`, sharing the daemon's workspace
    root (as an agent on the daemon's host may)."""
    tmp = tmp_path_factory.mktemp("authz")
    certs = make_certs(tmp / "certs")
    for name in ("alice", "bob"):
        issue(certs, name, "client")
    CA.load(certs).issue_to(certs, "boss", "client", admin=True)
    d = Daemon(workdir=tmp, certs=certs, data_dir=tmp / "data", args=["--no-spawn"]).start()
    victim = start_agent(d, "victim", "echo", extra_args=["--workspace-root", str(tmp / "data" / "workspaces")])
    try:
        yield d, victim
    finally:
        victim.stop()
        d.kill()


def client(d: Daemon, name: str) -> MeshClient:
    return MeshClient(d.address, paths_for(d.certs, name), timeout=10)


async def wait_victim(d: Daemon) -> None:
    async with client(d, "cli") as c:
        await await_for(lambda: c.list_agents("echo"), timeout=20, what="the echo agent to register")


async def run(c: MeshClient, cmd: Command, timeout: float = 20) -> list[TaskEvent]:
    events: list[TaskEvent] = []

    async def go() -> None:
        async for ev in c.submit(cmd):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


def stub(d: Daemon, name: str, agent_type: str = "stubtype") -> StubAgent:
    return StubAgent(d.address, issue(d.certs, name, "agent"), name, agent_type)


async def fetch_raw(
    d: Daemon, name: str | CertPaths, task_id: str, path: str
) -> tuple[bytes, grpc.StatusCode | None, str]:
    """FetchArtifact with a certificate; (bytes received, status code or None, details)."""
    data = b""
    paths = paths_for(d.certs, name) if isinstance(name, str) else name
    async with secure_channel(d.address, paths) as ch:
        try:
            async for chunk in pb_grpc.MeshStub(ch).FetchArtifact(
                pb.FetchArtifactRequest(task_id=task_id, path=path), timeout=10
            ):
                data += chunk.data
        except grpc.aio.AioRpcError as exc:
            return data, exc.code(), exc.details() or ""
    return data, None, ""


# ---------------------------------------------------------------------------- finding 1
async def test_an_agent_reporting_workspace_root_cannot_fetch_the_ca_key(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    key = d.certs / "ca-key.pem"
    assert b"PRIVATE KEY" in key.read_bytes()
    async with stub(d, "mallory", "malltype") as m, client(d, "alice") as alice:
        submit = asyncio.ensure_future(run(alice, Command("malltype", Action.RUN, "x")))
        run_env = await m.expect(pb.RUN)
        task_id = run_env.task.task_id
        res = pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, output="done", workspace="/")
        m.send(pb.REPLY, task_id=task_id, correlation_id=run_env.id, reply=pb.Reply(result=res))
        events = await submit
        assert events[-1].kind == EventKind.RESULT and events[-1].result and events[-1].result.ok
        rel = str(key).lstrip("/")
        attempts = [str(key), rel, "../" * 30 + rel, "ca-key.pem", "../../certs/ca-key.pem", "/etc/passwd"]
        for who in ("mallory", "alice", "boss"):  # the agent that ran it, its owner, an admin
            for path in attempts:
                data, code, details = await fetch_raw(d, who, task_id, path)
                assert b"PRIVATE KEY" not in data and data == b"", (who, path)
                assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (who, path, code)
                if path.startswith("/"):
                    assert code == grpc.StatusCode.INVALID_ARGUMENT and "absolute" in details
                if ".." in path:
                    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'..'" in details
        data, code, details = await fetch_raw(d, "alice", task_id, "ca-key.pem")
        assert code == grpc.StatusCode.NOT_FOUND and "mallory" in details and "host" in details


async def test_artifacts_symlinks_and_other_users(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await wait_victim(d)
    async with client(d, "alice") as alice:
        events = await run(alice, Command("echo", Action.RUN, "files", task_id="alice-files"))
        assert events[-1].result and events[-1].result.ok and events[-1].result.agent_id == "victim"
        ws = d.data_dir / "workspaces" / "alice-files"
        ws.mkdir(parents=True, exist_ok=True)  # an echo that writes no file makes no workspace (made on first use)
        (ws / "report.txt").write_text("the report")
        (ws / "key-link.pem").symlink_to(d.certs / "ca-key.pem")
        (ws / "certs-dir").symlink_to(d.certs)
        got = await alice.fetch_artifact("alice-files", "report.txt", d.workdir / "fetched.txt")
        assert got.read_text() == "the report"
        for path, code in (
            ("key-link.pem", grpc.StatusCode.PERMISSION_DENIED),
            ("certs-dir/ca-key.pem", grpc.StatusCode.PERMISSION_DENIED),
            ("../alice-files/report.txt", grpc.StatusCode.INVALID_ARGUMENT),
            ("report.txt\x00.png", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            data, got_code, details = await fetch_raw(d, "alice", "alice-files", path)
            assert data == b"" and got_code == code, (path, got_code, details)
            assert "path" in details
    # another client, and an agent that did not run it, get NOT_FOUND for the very file
    for who in ("bob",):
        data, code, details = await fetch_raw(d, who, "alice-files", "report.txt")
        assert data == b"" and code == grpc.StatusCode.NOT_FOUND and details == "no task 'alice-files'"
    async with stub(d, "snoop-files"):
        data, code, _ = await fetch_raw(d, "snoop-files", "alice-files", "report.txt")
        assert data == b"" and code == grpc.StatusCode.NOT_FOUND
    victim_certs = paths_for(d.workdir / "agent-victim" / "certs", "victim")
    data, code, _ = await fetch_raw(d, victim_certs, "alice-files", "report.txt")
    assert data == b"the report" and code is None  # the agent that ran it may


async def test_a_sub_task_cannot_borrow_another_users_workspace(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await wait_victim(d)
    async with client(d, "bob") as bob:
        await run(bob, Command("echo", Action.RUN, "bob's files", task_id="bob-ws"))
    async with stub(d, "mallory3", "malltype3") as m, client(d, "alice") as alice:
        submit = asyncio.ensure_future(run(alice, Command("malltype3", Action.RUN, "x")))
        run_env = await m.expect(pb.RUN)
        parent = run_env.task.task_id
        bad = m.send(
            pb.DELEGATE_TASK,
            task_id=parent,
            task=pb.TaskSpec(
                agent_type="echo", input="read bob's", parent_task_id=parent, options={"workspace": "bob-ws"}
            ),
        )
        err = await m.error_for(bad)
        assert err.error.code == "PERMISSION_DENIED" and "workspace-option" in err.error.message
        good = m.send(
            pb.DELEGATE_TASK,
            task_id=parent,
            task=pb.TaskSpec(agent_type="echo", input="fine", parent_task_id=parent, options={"workspace": parent}),
        )
        rep = await m.expect(pb.REPLY, lambda e: e.correlation_id == good.id, timeout=20)
        assert rep.sender == "orchgpt" and rep.reply.result.output == "fine"
        m.send(
            pb.REPLY,
            task_id=parent,
            correlation_id=run_env.id,
            reply=pb.Reply(result=pb.TaskResult(task_id=parent, state=pb.SUCCEEDED)),
        )
        await submit
        _, _, children = await alice.get_task(parent)
        assert [c.submitted_by for c in children] == ["client:alice"]  # inherits the root's owner


# ---------------------------------------------------------------------------- finding 2
async def test_an_agent_cannot_send_control_messages_to_another(mesh: tuple[Daemon, AgentProc]) -> None:
    d, victim = mesh
    await wait_victim(d)
    async with stub(d, "mallory2") as m:
        forged = [
            m.send(
                pb.RUN,
                to_agent="victim",
                task_id="forged-1",
                task=pb.TaskSpec(task_id="forged-1", agent_type="echo", input="pwned", options={"delay": "30"}),
            ),
            m.send(pb.TERMINATE, to_agent="victim", terminate=pb.Terminate(reason="bye")),
            m.send(pb.TERMINATE, recipient=pb.Address(broadcast=True), terminate=pb.Terminate(reason="all")),
            m.send(pb.CANCEL, to_type="echo", task_id="x", cancel=pb.Cancel(reason="x")),
            m.send(
                pb.APPROVAL_RESPONSE,
                to_agent="victim",
                task_id="x",
                approval_response=pb.ApprovalResponse(request_id="r1", decision=pb.APPROVE),
            ),
            m.send(pb.REGISTERED, to_agent="victim", registered=pb.Registered(agent_id="victim")),
            m.send(pb.RUN, task=pb.TaskSpec(task_id="self", agent_type="echo")),  # to the daemon
        ]
        for env in forged:
            err = await m.error_for(env)
            assert err.error.code == "PERMISSION_DENIED", err
            assert "daemon-only" in err.error.message and "dropped" in err.error.message
        # the stream stays up: an allowed message still flows
        ping = m.send(pb.PING, ping=pb.Ping(sent_ms=1))
        await m.expect(pb.PONG, lambda e: e.correlation_id == ping.id)
    # the victim never saw any of it: it runs, is idle, and a user's task routed to it succeeds
    assert victim.proc.poll() is None, victim.log()
    async with client(d, "cli") as c:
        agents = await c.list_agents("echo")
        assert [(a.agent_id, str(a.state)) for a in agents] == [("victim", "idle")]
        events = await run(c, Command("echo", Action.RUN, "still mine"))
    assert events[-1].result and events[-1].result.ok and events[-1].result.output == "still mine"
    assert events[-1].result.agent_id == "victim"
    log = victim.log()
    assert "forged-1" not in log and "terminate_requested" not in log


# ---------------------------------------------------------------------------- finding 3
async def test_clients_see_and_act_on_their_own_work_only(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await wait_victim(d)
    async with client(d, "alice") as alice, client(d, "bob") as bob, client(d, "boss") as boss:
        bob_seen: list[TaskEvent] = []

        async def bob_watches() -> None:
            async for ev in bob.watch(""):
                bob_seen.append(ev)

        watcher = asyncio.ensure_future(bob_watches())
        # wait until the Watch is subscribed: a probe task of bob's shows up in it
        for i in range(40):
            await run(bob, Command("echo", Action.RUN, "probe", task_id=f"bob-probe-{i}"))
            await asyncio.sleep(0.1)
            if any(e.task_id == f"bob-probe-{i}" for e in bob_seen):
                break
        else:
            raise AssertionError("bob's Watch never saw bob's own task")
        a_events = await run(alice, Command("echo", Action.RUN, "alice's secret", task_id="alice-1"))
        session = a_events[-1].result and (await alice.get_task("alice-1"))[0].session_id
        assert session
        b_events = await run(bob, Command("echo", Action.RUN, "bob's", task_id="bob-1"))
        await await_for(
            lambda: any(e.task_id == "bob-1" and e.kind == EventKind.RESULT for e in bob_seen),
            timeout=10,
            what="bob's watch to see bob's result",
        )
        watcher.cancel()
        assert b_events[-1].result and b_events[-1].result.ok
        assert {e.task_id for e in bob_seen} - {f"bob-probe-{j}" for j in range(i + 1)} == {"bob-1"}

        # alice sees hers, bob does not see it exist
        assert (await alice.get_task("alice-1"))[0].submitted_by == "client:alice"
        mine = await alice.list_tasks(100)
        assert "alice-1" in {t.task_id for t in mine} and {t.submitted_by for t in mine} == {"client:alice"}
        theirs = await bob.list_tasks(100, include_children=True)
        assert "bob-1" in {t.task_id for t in theirs} and {t.submitted_by for t in theirs} == {"client:bob"}
        assert session in {s.session_id for s in await alice.list_sessions()}
        assert session not in {s.session_id for s in await bob.list_sessions()}
        calls = {
            "get_task": bob.get_task("alice-1"),
            "cancel": bob.cancel("alice-1"),
            "approve": bob.approve("alice-1", ApprovalResponse("r", ApprovalDecision.APPROVE)),
            "publish": bob.publish_session(session, ["x"]),
        }
        for what, coro in calls.items():
            with pytest.raises(ClientError) as ei:
                await coro
            assert ei.value.code == "NOT_FOUND", what
        with pytest.raises(ClientError) as ei:
            async for _ in bob.watch("alice-1"):
                pass
        assert ei.value.code == "NOT_FOUND"
        with pytest.raises(ClientError) as ei:
            await run(bob, Command("echo", Action.RUN, "steal", task_id="alice-1"))
        assert ei.value.code == "ALREADY_EXISTS"
        with pytest.raises(ClientError) as ei:
            await run(bob, Command("echo", Action.RUN, "join", session_id=session))
        assert ei.value.code == "PERMISSION_DENIED"
        # the admin sees everyone's, and may publish it
        assert {"alice-1", "bob-1"} <= {t.task_id for t in await boss.list_tasks(100)}
        assert (await boss.get_task("alice-1"))[0].input == "alice's secret"
        assert (await alice.publish_session(session, ["demo"])).published
        # the gallery lists published sessions to every client
        assert session in {s.session_id for s in await bob.list_sessions(published_only=True)}


async def test_agents_see_only_their_own_tasks(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await wait_victim(d)
    async with client(d, "alice") as alice:
        await run(alice, Command("echo", Action.RUN, "private", task_id="alice-2"))
    snoop = MeshClient(d.address, issue(d.certs, "snoop", "agent"), timeout=10)
    victim = MeshClient(d.address, paths_for(d.workdir / "agent-victim" / "certs", "victim"), timeout=10)
    try:
        for call in (snoop.list_tasks(), snoop.list_sessions()):
            with pytest.raises(ClientError) as ei:
                await call
            assert ei.value.code == "PERMISSION_DENIED"
        with pytest.raises(ClientError) as ei:
            async for _ in snoop.watch(""):
                pass
        assert ei.value.code == "PERMISSION_DENIED"
        with pytest.raises(ClientError) as ei:
            await snoop.get_task("alice-2")
        assert ei.value.code == "NOT_FOUND"
        with pytest.raises(ClientError) as ei:
            async for _ in snoop.watch("alice-2"):
                pass
        assert ei.value.code == "NOT_FOUND"
        # the agent that ran it sees it
        assert (await victim.get_task("alice-2"))[0].agent_id == "victim"
    finally:
        await snoop.close()
        await victim.close()


@pytest.mark.parametrize("name", ["orchgpt", "server"])
async def test_an_agent_certificate_with_a_reserved_name_is_refused(
    mesh: tuple[Daemon, AgentProc], tmp_path: Path, name: str
) -> None:
    d, _ = mesh
    paths = CA.load(d.certs).issue_to(tmp_path, name, "agent")  # bypasses `certs issue`'s check
    for _ in range(5):  # grpc may report a write racing the daemon's refusal as INTERNAL: try again
        sa = StubAgent(d.address, paths, name)
        try:
            with pytest.raises(AssertionError, match="stream ended"):  # never REGISTERED
                await sa.__aenter__()
        finally:
            await sa.__aexit__()
        assert sa.error is not None
        if sa.error.code() != grpc.StatusCode.INTERNAL:
            break
    assert sa.error.code() == grpc.StatusCode.PERMISSION_DENIED and "reserved" in (sa.error.details() or "")


# ---------------------------------------------------------------------------- issue 11 finding 9
async def test_command_replies_are_routed_back_to_the_asker(mesh: tuple[Daemon, AgentProc]) -> None:
    d, _ = mesh
    await wait_victim(d)
    async with stub(d, "stub-b") as b, stub(d, "stub-c") as c:
        # stub -> real agentd, by id and by type: agentd's Agent.on_command answers
        for target in ({"to_agent": "victim"}, {"to_type": "echo"}):
            cmd = b.send(pb.COMMAND, payload=b"hi", **target)
            rep = await b.expect(pb.REPLY, lambda e, cmd=cmd: e.correlation_id == cmd.id)
            assert rep.payload == b"echo: hi" and rep.sender == "victim"
            assert rep.WhichOneof("body") == "payload"
        # a REPLY nobody asked for, or a second answer, is refused and not delivered
        stray = c.send(pb.REPLY, to_agent="victim", correlation_id=cmd.id, payload=b"forged")
        err = await c.error_for(stray)
        assert err.error.code == "PERMISSION_DENIED" and "reply-answers-a-command" in err.error.message
        cmd2 = b.send(pb.COMMAND, to_agent="stub-c", payload=b"q")
        got = await c.expect(pb.COMMAND, lambda e: e.id == cmd2.id)
        assert got.sender == "stub-b"
        intercept = c.send(pb.REPLY, to_agent="victim", correlation_id=cmd2.id, payload=b"wrong asker")
        assert (await c.error_for(intercept)).error.code == "PERMISSION_DENIED"
        ok = c.send(pb.REPLY, to_agent="stub-b", correlation_id=cmd2.id, payload=b"a")
        assert (await b.expect(pb.REPLY, lambda e: e.correlation_id == cmd2.id)).payload == b"a"
        again = c.send(pb.REPLY, to_agent="stub-b", correlation_id=cmd2.id, payload=b"twice")
        assert (await c.error_for(again)).error.code == "PERMISSION_DENIED"
        assert ok.id != again.id
        # real agentd asks (TaskContext.ask) a stub, which answers
        async with client(d, "cli") as cli:
            task = asyncio.ensure_future(run(cli, Command("echo", Action.RUN, "ping", options={"ask": "stub-b"})))
            q = await b.expect(pb.COMMAND, lambda e: e.sender == "victim")
            assert q.payload == b"ping"
            b.send(pb.REPLY, to_agent="victim", correlation_id=q.id, payload=b"pong from b")
            events = await task
            assert events[-1].result and events[-1].result.output == "pong from b"
            # unanswered: the ask times out and the task fails saying so
            events = await run(
                cli, Command("echo", Action.RUN, "hello?", options={"ask": "stub-c", "ask_timeout": "0.5"})
            )
            assert events[-1].result and not events[-1].result.ok
            assert "no reply from stub-c" in events[-1].result.error
            # no such agent: an error at once, not a timeout
            events = await run(cli, Command("echo", Action.RUN, "x", options={"ask": "nobody-here"}))
            assert events[-1].result and "NOT_FOUND" in events[-1].result.error
