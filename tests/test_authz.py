"""orchgpt.authz and the pieces that use it, without a daemon: the tables (and their copy in
docs/security.md), decisions, the open-COMMAND map, reserved names, agentd's own check, and the
artifact path rule."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt import authz, codec
from orchgpt.artifacts import ArtifactError, open_artifact, workspace_name
from orchgpt.batching import Outbox
from orchgpt.certs import CA, RESERVED_NAMES, Identity, check_issuable_name, identity_from_pem
from orchgpt.errors import CertError
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import Task

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)

ALICE = Identity("alice", "client")
BOB = Identity("bob", "client")
ROOT_ADMIN = Identity("root", "client", admin=True)
AGENT = Identity("worker-1", "agent")
SERVER = Identity("server", "server")


# ---------------------------------------------------------------------------- docs agree
def test_docs_security_md_shows_the_code_tables() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    assert authz.rpc_table_markdown() in doc, "docs/security.md's RPC table differs from orchgpt/authz.py"
    assert authz.envelope_table_markdown() in doc, "docs/security.md's envelope table differs"
    assert "## Limits\n" in doc and "](security-limits.md)" in doc
    assert "## Sandbox\n" in doc and "](security-sandbox.md)" in doc


def test_every_rpc_of_the_service_is_in_the_table() -> None:
    from orchgpt.iac.v1 import schedules_pb2

    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["Mesh"].methods}
    methods |= {m.name for m in schedules_pb2.DESCRIPTOR.services_by_name["Schedules"].methods}
    table = {name.split("(")[0] for name in authz.RPC_TABLE}
    assert methods == table
    assert {r.kind.split("(")[0] for r in authz.ENVELOPE_TABLE} == set(pb.MessageType.keys()) - {
        "MESSAGE_TYPE_UNSPECIFIED"
    }


# ---------------------------------------------------------------------------- RPC decisions
def test_rpc_decisions_by_role() -> None:
    assert authz.rpc(AGENT, "Connect") and not authz.rpc(ALICE, "Connect")
    d = authz.rpc(AGENT, "ListTasks")
    assert not d and d.code == "PERMISSION_DENIED" and "rpc:ListTasks:agent" in d.message
    assert not authz.rpc(AGENT, "Watch(all)") and authz.rpc(AGENT, "Watch(task)")
    assert not authz.rpc(AGENT, "Submit") and "client role needed" in authz.rpc(AGENT, "Submit").message
    assert all(not authz.rpc(SERVER, name) for name in authz.RPC_TABLE)
    assert authz.connect(Identity("orchgpt", "agent")).rule == "reserved-name"
    assert not authz.connect(Identity("server", "agent"))


def test_task_access_follows_ownership_and_assignment() -> None:
    root = Task(task_id="r", agent_type="manager", submitted_by="client:alice", agent_id="worker-1")
    child = Task(
        task_id="c", agent_type="echo", parent_task_id="r", submitted_by="agent-old-style", agent_id="worker-2"
    )
    tasks = {"r": root, "c": child}
    look = tasks.get
    for rpc in ("GetTask", "Watch(task)", "CancelTask", "Approve", "FetchArtifact"):
        assert authz.task_access(ALICE, rpc, child, look), rpc  # inherits the root's owner
        d = authz.task_access(BOB, rpc, child, look)
        assert not d and d.code == "NOT_FOUND" and d.message == "no task 'c'"  # as if absent
        assert authz.task_access(ROOT_ADMIN, rpc, child, look)
    assert authz.task_access(AGENT, "GetTask", child, look)  # a sub-task of its task
    assert not authz.task_access(Identity("worker-3", "agent"), "GetTask", child, look)
    assert authz.task_access(Identity("worker-2", "agent"), "FetchArtifact", child, look)
    assert authz.list_owner(ALICE, "ListTasks") == "client:alice"
    assert authz.list_owner(ROOT_ADMIN, "ListTasks") is None


def test_submit_access() -> None:
    theirs = Task(task_id="t", agent_type="echo", submitted_by="client:alice")
    d = authz.submit_access(BOB, theirs, {}.get, "", False, False)
    assert d.code == "ALREADY_EXISTS"
    assert authz.submit_access(ALICE, theirs, {}.get, "", False, False)
    assert authz.submit_access(BOB, None, {}.get, "s1", True, False).code == "PERMISSION_DENIED"
    assert authz.submit_access(BOB, None, {}.get, "s1", True, True)
    assert authz.submit_access(BOB, None, {}.get, "new", False, False)
    assert authz.submit_access(ROOT_ADMIN, None, {}.get, "s1", True, False)


# ---------------------------------------------------------------------------- envelopes
@pytest.mark.parametrize("kind", ["RUN", "CANCEL", "TERMINATE", "APPROVAL_RESPONSE", "REGISTERED"])
@pytest.mark.parametrize("target", [None, "agent_id", "agent_type", "broadcast"])
def test_only_the_daemon_sends_control_kinds(kind: str, target: str | None) -> None:
    d = authz.from_agent(kind, None, target)
    assert not d and d.rule == "daemon-only" and d.code == "PERMISSION_DENIED"


def test_envelope_routes() -> None:
    assert authz.from_agent("TASK_EVENT", "event", None).route == "daemon"
    assert authz.from_agent("TASK_EVENT", "event", "agent_id").route == "daemon"
    assert authz.from_agent("REPLY", "reply", None).route == "daemon"
    assert authz.from_agent("REPLY", "reply", "agent_id").route == "daemon"
    assert authz.from_agent("REPLY", "payload", "agent_id").route == "agents"
    assert not authz.from_agent("REPLY", "payload", "broadcast")
    assert not authz.from_agent("REPLY", "payload", None)
    assert authz.from_agent("COMMAND", "payload", "agent_type").route == "agents"
    assert not authz.from_agent("COMMAND", "payload", "broadcast")
    assert authz.from_agent("BROADCAST", "broadcast", "broadcast").route == "agents"
    assert authz.from_agent("FILE_TRANSFER", "file_chunk", "agent_id").route == "agents"
    assert authz.from_agent("PING", "ping", None).route == "daemon"
    assert authz.from_agent("PING", "ping", "agent_id").rule == "agent-to-agent-kinds"
    assert authz.from_agent("ERROR", "error", "agent_id").rule == "agent-to-agent-kinds"
    assert authz.from_agent("COMMAND", "payload", None).rule == "to-daemon-kinds"
    assert authz.from_agent("COMMAND", "payload", "client_id").rule == "agent-to-agent-targets"
    assert authz.from_agent("UNKNOWN(99)", None, None).code == "INVALID_ARGUMENT"


def test_agent_accepts_control_kinds_from_the_daemon_only() -> None:
    for kind in ("RUN", "CANCEL", "TERMINATE", "APPROVAL_RESPONSE", "REGISTERED"):
        assert authz.agent_accepts(kind, None, authz.DAEMON)
        assert not authz.agent_accepts(kind, None, "evil-agent")
    assert authz.agent_accepts("REPLY", "reply", authz.DAEMON)
    assert not authz.agent_accepts("REPLY", "reply", "evil-agent")
    assert authz.agent_accepts("REPLY", "payload", "other-agent")
    assert authz.agent_accepts("COMMAND", "payload", "other-agent")
    assert authz.DAEMON in RESERVED_NAMES


def test_open_commands_pair_one_reply_with_one_command() -> None:
    now = [0.0]
    oc = authz.OpenCommands(ttl=10, max_per_agent=2, max_total=5, clock=lambda: now[0])
    oc.opened("c1", "a", "b")
    assert not oc.answer("c1", "x", "a")  # not the agent that was asked
    assert not oc.answer("c1", "b", "x")  # not to the agent that asked
    assert not oc.answer("nope", "b", "a")
    d = oc.answer("c1", "b", "a")
    assert d and d.route == "agents"
    assert not oc.answer("c1", "b", "a")  # once
    oc.opened("c2", "a", "b")
    oc.opened("c3", "a", "b")
    oc.opened("c4", "a", "b")  # a third: a's oldest (c2) is forgotten
    assert len(oc) == 2 and not oc.answer("c2", "b", "a") and oc.answer("c3", "b", "a")
    now[0] = 11.0  # c4 expired
    assert not oc.answer("c4", "b", "a") and len(oc) == 0
    for i in range(20):
        oc.opened(f"k{i}", f"asker{i}", "b")
    assert len(oc) == 5  # bounded overall
    assert oc.answer("k19", "b", "asker19")
    oc.forget_agent("b")
    assert len(oc) == 0


# ---------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["orchgpt", "server", "ORCHGPT", "local-echo-1", "Local-x"])
def test_reserved_names_cannot_be_issued(name: str) -> None:
    with pytest.raises(CertError, match="reserved"):
        check_issuable_name(name)


def test_cli_issue_refuses_reserved_names_and_issues_admin(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchgpt", "certs", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )

    assert run("init", "--dir", "c").returncode == 0
    for name, role in (("orchgpt", "agent"), ("server", "agent"), ("server", "client"), ("local-x", "agent")):
        r = run("issue", name, "--role", role, "--dir", "c")
        assert r.returncode != 0 and "reserved" in r.stderr, (name, r.stderr)
    r = run("issue", "boss", "--role", "agent", "--dir", "c", "--admin")
    assert r.returncode != 0 and "client" in r.stderr
    assert run("issue", "cli2", "--role", "client", "--dir", "c").returncode == 0
    r = run("issue", "boss", "--role", "client", "--dir", "c", "--admin")
    assert r.returncode == 0, r.stderr
    ident = identity_from_pem((tmp_path / "c" / "boss.pem").read_bytes())
    assert ident == Identity("boss", "client", ident.serial, True)
    assert not identity_from_pem((tmp_path / "c" / "cli2.pem").read_bytes()).admin


# ---------------------------------------------------------------------------- agentd's check
def _link():  # type: ignore[no-untyped-def]
    from agentd.link import Link
    from agentd.runtime import agent_class

    agent = agent_class("echo")()
    link = Link(agent, "victim", "127.0.0.1:1", None, Path("/nonexistent"))  # type: ignore[arg-type]
    return link


async def test_link_drops_control_messages_not_from_the_daemon() -> None:
    link = _link()
    out = Outbox()
    forged = [
        codec.new_envelope(pb.TERMINATE, "evil", to_agent="victim", terminate=pb.Terminate(reason="x")),
        codec.new_envelope(
            pb.RUN, "evil", to_agent="victim", task=pb.TaskSpec(task_id="t1", agent_type="echo", input="hi")
        ),
        codec.new_envelope(pb.CANCEL, "evil", task_id="t1", cancel=pb.Cancel(reason="x")),
        codec.new_envelope(pb.REGISTERED, "evil", registered=pb.Registered(agent_id="victim")),
    ]
    for env in forged:
        link._on_envelope(env, out)
    assert not link.terminated and not link.stopping and not link.running
    assert not link.connected.is_set() and not out.closed
    # an APPROVAL_RESPONSE from another agent does not answer a pending approval
    fut = asyncio.get_running_loop().create_future()
    link._approvals["req-1"] = fut
    link._on_envelope(
        codec.new_envelope(
            pb.APPROVAL_RESPONSE, "evil", approval_response=pb.ApprovalResponse(request_id="req-1", decision=pb.APPROVE)
        ),
        out,
    )
    assert not fut.done()
    # the same from the daemon is obeyed
    link._on_envelope(
        codec.new_envelope(
            pb.APPROVAL_RESPONSE,
            authz.DAEMON,
            approval_response=pb.ApprovalResponse(request_id="req-1", decision=pb.APPROVE),
        ),
        out,
    )
    assert fut.done()
    link._on_envelope(codec.new_envelope(pb.TERMINATE, authz.DAEMON, terminate=pb.Terminate(reason="bye")), out)
    assert link.terminated


async def test_link_ask_gets_the_reply_payload_or_times_out() -> None:
    from agentd.errors import AskError, AskTimeout

    link = _link()
    out = Outbox()
    link.outbox = out
    task = asyncio.ensure_future(link.ask("type:echo", b"ping", timeout=5))
    await asyncio.sleep(0)
    batch = await asyncio.wait_for(out.next_batch(), 2)
    assert batch is not None
    cmd = batch.envelopes[0]
    assert cmd.type == pb.COMMAND and cmd.recipient.agent_type == "echo" and cmd.payload == b"ping"
    # a forged REPLY(result) from an agent does not answer it; the REPLY(payload) does
    link._on_envelope(codec.new_envelope(pb.REPLY, "other", correlation_id=cmd.id, payload=b"pong"), out)
    assert await asyncio.wait_for(task, 2) == b"pong"
    with pytest.raises(AskTimeout):
        await link.ask("nobody", b"x", timeout=0.1)
    task = asyncio.ensure_future(link.ask("nobody", b"x", timeout=5))
    await asyncio.sleep(0)
    batch = await asyncio.wait_for(out.next_batch(), 2)
    cmd = batch.envelopes[-1]  # type: ignore[union-attr]
    link._on_envelope(
        codec.new_envelope(
            pb.ERROR, authz.DAEMON, correlation_id=cmd.id, error=pb.Error(code="NOT_FOUND", message="no agent")
        ),
        out,
    )
    with pytest.raises(AskError, match="NOT_FOUND"):
        await asyncio.wait_for(task, 2)


# ---------------------------------------------------------------------------- artifact paths
def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "workspaces"
    (root / "t1" / "sub").mkdir(parents=True)
    (root / "t1" / "ok.txt").write_text("fine")
    (root / "t1" / "sub" / "deep.txt").write_text("deeper")
    secret = tmp_path / "secret.pem"
    secret.write_text("KEY")
    return root, secret


def _read(root: Path, ws: str, path: str) -> bytes:
    f = open_artifact(root, ws, path)
    return b"".join(f.chunks(1024))  # type: ignore[attr-defined]


def test_artifacts_are_served_from_the_root_by_relative_path(tmp_path: Path) -> None:
    root, _ = _workspace(tmp_path)
    assert _read(root, "t1", "ok.txt") == b"fine"
    assert _read(root, "t1", "./sub//deep.txt") == b"deeper"


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../secret.pem", "sub/../../secret.pem", "a\x00b", "..", "sub\\..\\x"]
)
def test_bad_artifact_paths_are_invalid_argument(tmp_path: Path, path: str) -> None:
    root, _ = _workspace(tmp_path)
    with pytest.raises(ArtifactError) as ei:
        open_artifact(root, "t1", path)
    assert ei.value.code == "INVALID_ARGUMENT" and "path" in str(ei.value)


def test_symlinks_out_of_the_root_are_refused(tmp_path: Path) -> None:
    root, secret = _workspace(tmp_path)
    (root / "t1" / "link.pem").symlink_to(secret)
    (root / "t1" / "dirlink").symlink_to(tmp_path)
    (root / "t1" / "inner").symlink_to(root / "t1" / "ok.txt")  # even inside: no links at all
    (root / "t2").symlink_to(tmp_path)  # a workspace that is itself a link
    for ws, path in (("t1", "link.pem"), ("t1", "dirlink/secret.pem"), ("t1", "inner"), ("t2", "secret.pem")):
        with pytest.raises(ArtifactError) as ei:
            open_artifact(root, ws, path)
        assert ei.value.code == "PERMISSION_DENIED", (ws, path)
    with pytest.raises(ArtifactError) as ei:
        open_artifact(root, "t1", "missing.txt")
    assert ei.value.code == "NOT_FOUND"
    with pytest.raises(ArtifactError) as ei:
        open_artifact(root, "t1", "sub")  # a directory
    assert ei.value.code == "NOT_FOUND"
    os.mkfifo(root / "t1" / "fifo")
    with pytest.raises(ArtifactError):
        open_artifact(root, "t1", "fifo")  # no hang on a FIFO


def test_workspace_option_counts_only_within_the_session() -> None:
    parent = Task(task_id="proj", agent_type="manager", session_id="s1")
    other = Task(task_id="theirs", agent_type="echo", session_id="s2")
    tasks = {"proj": parent, "theirs": other}
    mine = Task(
        task_id="c1", agent_type="backend", session_id="s1", parent_task_id="proj", options={"workspace": "proj"}
    )
    derived = Task(
        task_id="c3", agent_type="backend", session_id="s1", parent_task_id="proj", options={"workspace": "proj.api.2"}
    )
    sneaky = Task(
        task_id="c2", agent_type="backend", session_id="s1", parent_task_id="proj", options={"workspace": "theirs"}
    )
    rootless = Task(task_id="c4", agent_type="backend", session_id="s9", options={"workspace": "proj"})
    assert workspace_name(mine, tasks.get) == "proj"
    assert workspace_name(derived, tasks.get) == "proj.api.2"
    assert workspace_name(sneaky, tasks.get) == "c2"
    assert workspace_name(rootless, tasks.get) == "c4"  # no owner: its own directory


def test_ca_issue_still_allows_the_daemon_its_own_names(tmp_path: Path) -> None:
    ca = CA.create()
    ca.issue("server", "server")  # `certs init` issues it
    ca.issue("local-echo-abc", "agent")  # the spawner issues it


def test_a_delegated_task_cannot_borrow_another_sessions_workspace() -> None:
    parent = Task(task_id="mine", agent_type="manager", session_id="s1")
    theirs = Task(task_id="theirs", agent_type="echo", session_id="s2")
    look = {"mine": parent, "theirs": theirs}.get
    assert authz.delegation({}, parent, look)
    assert authz.delegation({"workspace": "mine"}, parent, look)
    d = authz.delegation({"workspace": "theirs"}, parent, look)
    assert not d and d.rule == "workspace-option" and d.code == "PERMISSION_DENIED"
    assert not authz.delegation({"workspace": "nonexistent"}, parent, look)
    assert authz.delegation({"workspace": "mine.api.2"}, parent, look)  # derived from the parent's
    assert not authz.delegation({"workspace": "theirs.api"}, parent, look)
    mine = Task(task_id="c", agent_type="x", session_id="s1", parent_task_id="mine", options={"workspace": "mine.api"})
    look2 = {"mine": parent, "theirs": theirs, "c": mine}.get
    assert authz.delegation({"workspace": "mine.api.x"}, mine, look2)
    # a submitted task: only a workspace of the submitter's own tasks
    theirs.submitted_by = "client:bob"
    parent.submitted_by = "client:alice"
    assert authz.workspace_option({"workspace": "mine"}, look, owner="client:alice")
    assert not authz.workspace_option({"workspace": "theirs"}, look, owner="client:alice")
    assert not authz.workspace_option({"workspace": "theirs.x"}, look, owner="client:alice")


# ---------------------------------------------------------------------------- store owner filter
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_lists_filter_by_owner(kind: str, tmp_path: Path) -> None:
    from orchgpt.store.memory import MemoryStore
    from orchgpt.store.sqlite import SqliteStore

    store = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "s.db")
    try:
        for tid, sid, owner, parent in (
            ("a1", "sa", "client:alice", ""),
            ("a2", "sa", "client:alice", "a1"),
            ("b1", "sb", "client:bob", ""),
            ("a3", "sc", "client:alice", ""),
        ):
            store.create_task(
                Task(task_id=tid, agent_type="echo", session_id=sid, submitted_by=owner, parent_task_id=parent)
            )
        assert {t.task_id for t in store.list_tasks(50, owner="client:alice")} == {"a1", "a3"}
        assert {t.task_id for t in store.list_tasks(50, include_children=True, owner="client:alice")} == {
            "a1",
            "a2",
            "a3",
        }
        assert {t.task_id for t in store.list_tasks(50, "sa", True, "client:bob")} == set()
        assert {t.task_id for t in store.list_tasks(50)} == {"a1", "a3", "b1"}  # None: everyone's
        assert {s.session_id for s in store.list_sessions(50, owner="client:alice")} == {"sa", "sc"}
        assert {s.session_id for s in store.list_sessions(50, owner="client:bob")} == {"sb"}
        assert {s.session_id for s in store.list_sessions(50)} == {"sa", "sb", "sc"}
        store.publish_session("sb", [])
        assert {s.session_id for s in store.list_sessions(50, True, owner="client:alice")} == set()
        assert {s.session_id for s in store.list_sessions(50, True)} == {"sb"}
    finally:
        store.close()
