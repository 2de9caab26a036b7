"""Conformance of the authorization table: a real daemon, probed by a process that knows only the
.proto (stubs generated here with grpc_tools.protoc; tests/support/conformance_probe.py imports
neither orchgpt.iac nor agentd). Every row of orchgpt/authz.py's tables, allowed and refused, is
checked against what that outsider observed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchgpt import authz
from orchgpt.certs import CA
from tests.support.mesh import Daemon, issue, make_certs

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "orchgpt" / "iac" / "v1" / "iac.proto"
pytestmark = pytest.mark.timeout(120)

# which certificate plays which part of a table column
OWNER, OTHER_CLIENT, ADMIN, ASSIGNED_AGENT, OTHER_AGENT, SERVER = (
    "alice",
    "bob",
    "boss",
    "worker",
    "outsider",
    "server",
)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("conformance")
    stubs = tmp / "stubs"
    stubs.mkdir()
    shutil.copy(PROTO, tmp / "iac.proto")
    # the Schedules service, importing iac.proto from beside it (the probe's flat stubs)
    (tmp / "schedules.proto").write_text(
        (PROTO.parent / "schedules.proto")
        .read_text()
        .replace('import "orchgpt/iac/v1/iac.proto";', 'import "iac.proto";')
    )
    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"--python_out={stubs}",
            f"--grpc_python_out={stubs}",
            str(tmp / "iac.proto"),
            str(tmp / "schedules.proto"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gen.returncode == 0, gen.stderr
    certs = make_certs(tmp / "certs")
    for name in (OWNER, OTHER_CLIENT):
        issue(certs, name, "client")
    CA.load(certs).issue_to(certs, ADMIN, "client", admin=True)
    for name in (ASSIGNED_AGENT, OTHER_AGENT, "peer"):
        issue(certs, name, "agent")
    d = Daemon(workdir=tmp, certs=certs, data_dir=tmp / "data", args=["--no-spawn"]).start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the probe sees no project code
        probe = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "support" / "conformance_probe.py"),
                str(stubs),
                d.address,
                str(certs),
                str(d.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
            cwd=tmp,
        )
        assert probe.returncode == 0, f"probe failed:\n{probe.stderr[-4000:]}\ndaemon log:\n{d.log()[-3000:]}"
        yield json.loads(probe.stdout.strip().splitlines()[-1])
    finally:
        d.kill()


def _expected(scope: str, who: str) -> str:
    if scope == authz.NO:
        return "PERMISSION_DENIED"
    if scope == authz.OWN and who == OTHER_CLIENT:
        return "NOT_FOUND"
    if scope == authz.ASSIGNED and who == OTHER_AGENT:
        return "NOT_FOUND"
    return "OK"


_OBJECT_RPCS = {
    "Watch(task)",
    "GetTask",
    "CancelTask",
    "Approve",
    "FetchArtifact",
    "PublishSession",
    "ListMessages",
    "DeleteMessage",
    "ClearSession",
    "DeleteSession",
    "GetGraph",
    "DeleteGraph",
    "GetSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "DeleteSchedule",
}
_CASES = [
    (rpc, col, who)
    for rpc in authz.RPC_TABLE
    for col, people in (
        (authz.CLIENT, (OWNER, OTHER_CLIENT)),
        (authz.ADMIN, (ADMIN,)),
        (authz.AGENT, (ASSIGNED_AGENT, OTHER_AGENT)),
        (authz.SERVER, (SERVER,)),
    )
    for who in people
]


@pytest.mark.parametrize(("rpc", "column", "who"), _CASES, ids=[f"{r}-{w}" for r, _, w in _CASES])
def test_rpc_row(observed: dict[str, Any], rpc: str, column: str, who: str) -> None:
    scope = authz.RPC_TABLE[rpc][column]
    want = _expected(scope, who)
    if rpc not in _OBJECT_RPCS and want == "NOT_FOUND":
        want = "OK"  # a listing: allowed, and filtered (test_listings_are_filtered_by_owner)
    assert observed["rpc"][who][rpc] == want, f"{rpc} by {who} ({column}: {scope})"


def test_listings_are_filtered_by_owner(observed: dict[str, Any]) -> None:
    lists = observed["lists"]
    assert "alice-t" in lists[f"ListTasks:{OWNER}"] and "alice-live" in lists[f"ListTasks:{OWNER}"]
    assert "alice-t" not in lists[f"ListTasks:{OTHER_CLIENT}"]
    assert "alice-t" in lists[f"ListTasks:{ADMIN}"]
    assert lists[f"ListSessions:{OWNER}"] is True and lists[f"ListSessions:{ADMIN}"] is True
    assert lists[f"ListSessions:{OTHER_CLIENT}"] is False
    assert "alice-g" in lists[f"ListGraphs:{OWNER}"] and "alice-g" in lists[f"ListGraphs:{ADMIN}"]
    assert lists[f"ListGraphs:{OTHER_CLIENT}"] == [f"{OTHER_CLIENT}-g"]
    assert lists[f"ListSchedules:{OWNER}"] is True and lists[f"ListSchedules:{ADMIN}"] is True
    assert lists[f"ListSchedules:{OTHER_CLIENT}"] is False
    # only the owner's and the admin's approvals reached the agent running the task
    assert observed["approvals_seen_by_worker"] == sorted([f"req-{ADMIN}", f"req-{OWNER}"])


_ENV_CASES = [(r.kind, where) for r in authz.ENVELOPE_TABLE for where in ("daemon", *authz.TARGETS)]


@pytest.mark.parametrize(("kind", "where"), _ENV_CASES, ids=[f"{k}@{w}" for k, w in _ENV_CASES])
def test_envelope_row(observed: dict[str, Any], kind: str, where: str) -> None:
    """An agent's envelope of this kind to this recipient: refused (ERROR naming the rule, not
    delivered), forwarded to the other agent, or accepted by the daemon, as the table says."""
    rule = next(r for r in authz.ENVELOPE_TABLE if r.kind == kind)
    got = observed["env"][f"{kind}@{where}"]
    always_daemon = kind in ("REGISTER", "HEARTBEAT", "TASK_EVENT", "REPLY(result)", "DELEGATE_TASK")
    if always_daemon or where == "daemon":
        if rule.to_daemon:
            assert got.startswith("ACCEPTED"), got
        else:
            assert got.startswith("REFUSED:PERMISSION_DENIED:") and not got.endswith(":DELIVERED"), got
    elif where in rule.to_agents:
        if kind == "REPLY(payload)":  # allowed only as the answer to an open COMMAND (below)
            assert got == "REFUSED:PERMISSION_DENIED:reply-answers-a-command", got
        else:
            assert got == "FORWARDED", got
    else:
        assert got.startswith("REFUSED:PERMISSION_DENIED:") and not got.endswith(":DELIVERED"), got
    if kind in authz.DAEMON_ONLY:
        assert got == "REFUSED:PERMISSION_DENIED:daemon-only"
    assert observed["stream_up_after_refusals"]


def test_command_reply_pairing(observed: dict[str, Any]) -> None:
    assert observed["command_reply"] == {
        "delivered": True,
        "wrong_recipient_refused": True,
        "second_answer_refused": True,
        "unsolicited_refused": True,
    }


@pytest.mark.parametrize("kind", [r.kind for r in authz.ENVELOPE_TABLE if r.from_daemon])
def test_daemon_sends_its_kinds_as_orchgpt(observed: dict[str, Any], kind: str) -> None:
    assert observed["from_daemon"].get(kind) == [authz.DAEMON], observed["from_daemon"]
