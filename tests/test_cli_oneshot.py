"""`autogpt -c ...` and piped commands, end to end against a real `orchgpt serve` over mutual TLS.

The CLI runs as a subprocess (`python -m orchgpt_cli`) exactly as a user or a
CI script runs it; the daemon spawns real echo agents. The approval tests add a
remote agent (agentd's Link in this process, with its own certificate) whose
tasks ask for approval of a tool call.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import init_dir, paths_for
from orchgpt.models import Action, Delegation
from tests.support.mesh import Daemon, issue

JSON_KEYS = {"type", "kind", "task_id", "seq", "state", "text", "agent_type", "agent_id", "parent_task_id",
             "ts_ms", "data", "artifact", "approval", "result"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (the CLI's runs are independent sessions)."""
    root = tmp_path_factory.mktemp("cli-oneshot")
    certs = root / "certs"
    init_dir(certs)
    d = Daemon(workdir=root, certs=certs, data_dir=root / "data")
    d.start()
    yield d
    d.kill()


def env_for(mesh: Daemon, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update({"ORCHGPT_ADDRESS": mesh.address, "ORCHGPT_CERTS": str(mesh.certs), **extra})
    return env


def cli(mesh: Daemon, *args: str, stdin: str = "", timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchgpt_cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env or env_for(mesh), cwd=mesh.workdir)


async def tasks_in(mesh: Daemon, session: str = "") -> list:  # type: ignore[type-arg]
    async with mesh.client() as c:
        return await asyncio.wait_for(c.list_tasks(limit=500, session_id=session), 10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ tasks

def test_echo_prints_hello_and_exits_0(mesh: Daemon) -> None:
    r = cli(mesh, "-c", '/echo run "hello"')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "hello" in lines  # the output, verbatim
    assert lines[0].startswith("[echo ") and lines[0].endswith("] queued for echo")
    assert lines[-1].startswith("[echo ") and " succeeded (" in lines[-1]
    assert r.stderr == ""


def test_command_as_arguments(mesh: Daemon) -> None:
    r = cli(mesh, "/echo", "run", "two  spaces kept")
    assert r.returncode == 0, r.stderr
    assert "two  spaces kept" in r.stdout.splitlines()


def test_failing_task_exits_1_with_the_reason(mesh: Daemon) -> None:
    r = cli(mesh, "-c", '/echo run x -o "fail=the disk is full"')
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("autogpt: task ") and err[0].endswith(
        "(echo) failed: the disk is full"), r.stderr
    assert "Traceback" not in r.stderr


def test_json_lines_parse_with_documented_keys(mesh: Daemon) -> None:
    r = cli(mesh, "--json", "-c", '/echo run "hello world" -o tokens=1')
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(set(o) == JSON_KEYS and o["type"] == "event" for o in objs)
    assert objs[0]["kind"] == "status" and objs[0]["state"] == "queued"
    assert len({o["task_id"] for o in objs}) == 1 and all(o["agent_type"] == "echo" for o in objs)
    seqs = [o["seq"] for o in objs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert "".join(o["text"] for o in objs if o["kind"] == "token").split() == ["hello", "world"]
    last = objs[-1]
    assert last["kind"] == "result" and last["result"]["state"] == "succeeded"
    assert last["result"]["output"] == "hello world" and "usage" in last["result"]


def test_streamed_tokens_are_not_printed_twice(mesh: Daemon) -> None:
    r = cli(mesh, "-c", '/echo run "alpha beta" -o tokens=1')
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("alpha beta") == 1


async def test_piped_commands_run_in_order_in_one_session(mesh: Daemon) -> None:
    script = "# a comment\n/echo run first\n\n/echo run second\n"
    r = await asyncio.to_thread(cli, mesh, "--session", "piped-session-1", stdin=script)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out.index("first") < out.index("second")
    tasks = await tasks_in(mesh, "piped-session-1")
    assert sorted(t.input for t in tasks) == ["first", "second"]


async def test_a_line_that_does_not_parse_runs_nothing(mesh: Daemon) -> None:
    before = len(await tasks_in(mesh))
    r = await asyncio.to_thread(cli, mesh, stdin='/echo run fine\n/echo run "broken\n')
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        'autogpt: line 2: unbalanced " quote at column 11: close it, e.g. /echo run "hello world" | python']
    assert r.stdout == ""
    assert len(await tasks_in(mesh)) == before


def test_first_failure_stops_unless_keep_going(mesh: Daemon) -> None:
    r = cli(mesh, "-c", "/echo run one -o fail=nope", "-c", "/echo run two")
    assert r.returncode == 1 and "two" not in r.stdout.splitlines()
    r = cli(mesh, "-k", "-c", "/echo run one -o fail=nope", "-c", "/echo run two")
    assert r.returncode == 1 and "two" in r.stdout.splitlines()


def test_unknown_agent_is_a_usage_error(mesh: Daemon) -> None:
    r = cli(mesh, "-c", "/nosuch run x")
    assert r.returncode == 2
    assert r.stderr.startswith('autogpt: unknown command or agent "/nosuch": expected /<agent> <action>')
    assert len(r.stderr.splitlines()) == 1


def test_refused_command_exits_1(mesh: Daemon) -> None:
    r = cli(mesh, "-c", "/echo run x --id 'bad id with spaces'")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and "invalid task id" in r.stderr


def test_ctrl_c_cancels_the_running_task(mesh: Daemon) -> None:
    p = subprocess.Popen([sys.executable, "-m", "orchgpt_cli", "--json", "-c", "/echo run slow -o delay=30"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env_for(mesh))
    try:
        assert p.stdout is not None
        task_id = ""
        for line in p.stdout:  # wait until the agent runs it
            ev = json.loads(line)
            task_id = ev["task_id"]
            if ev["kind"] == "log" and ev["text"].startswith("waiting"):
                break
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130
    assert err.splitlines()[-1] == f"autogpt: interrupted: cancelled task {task_id[:8]} (echo)"
    tasks = asyncio.run(tasks_in(mesh))
    assert next(t for t in tasks if t.task_id == task_id).state == "cancelled"


# ------------------------------------------------------------------ meta commands

def test_meta_commands_in_plain_text(mesh: Daemon) -> None:
    r = cli(mesh, "--session", "meta-plain-1", "-c", "/echo run remembered", "-c", "/agents", "-c", "/tasks",
            "-c", "/history 3")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "TYPE  AGENT" in out and "echo" in out and "idle" in out
    task_line = next(x for x in out.splitlines() if x.endswith("remembered") and " run " in x)
    short = task_line.split()[0]
    assert len(short) == 8
    assert "1 task in this session" in out
    assert '/echo run remembered  -> succeeded: remembered' in out
    r = cli(mesh, "-c", f"/task {short}", "-c", f"/logs {short}")
    assert r.returncode == 0, r.stderr
    assert "  command   /echo run remembered" in r.stdout and "succeeded" in r.stdout
    assert "events (" in r.stdout and "queued for echo" in r.stdout


def test_meta_commands_in_json(mesh: Daemon) -> None:
    r = cli(mesh, "--json", "--session", "meta-json-1", "-c", "/echo run for the gallery", "-c", "/agents",
            "-c", "/tasks", "-c", "/sessions", "-c", "/publish meta-json-1 demo, fastapi", "-c", "/gallery",
            "-c", "/session meta-json-1")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    by_type = {o["type"]: o for o in objs if o["type"] != "event"}
    assert set(by_type) == {"agents", "tasks", "sessions", "publish", "gallery", "session"}
    assert any(a["agent_type"] == "echo" for a in by_type["agents"]["agents"])
    assert [t["input"] for t in by_type["tasks"]["tasks"]] == ["for the gallery"]
    assert by_type["tasks"]["tasks"][0]["state"] == "succeeded"
    assert any(s["session_id"] == "meta-json-1" for s in by_type["sessions"]["sessions"])
    assert by_type["publish"]["session"]["published"] is True
    assert by_type["publish"]["session"]["tags"] == ["demo", "fastapi"]
    assert [s["session_id"] for s in by_type["gallery"]["sessions"]] == ["meta-json-1"]
    assert by_type["session"]["session"]["task_count"] == 1


def test_unknown_task_id_is_one_line(mesh: Daemon) -> None:
    r = cli(mesh, "-c", "/task ffffffffffff")
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["autogpt: no task 'ffffffffffff'"]


def test_bad_meta_arguments_are_usage_errors(mesh: Daemon) -> None:
    r = cli(mesh, "-c", "/tasks many")
    assert (r.returncode, r.stderr.strip()) == (2, 'autogpt: expected a number, got "many": usage /tasks [N] [all]')
    r = cli(mesh, "-c", "/task")
    assert (r.returncode, r.stderr.strip()) == (2, "autogpt: /task needs more arguments: usage /task ID")


# ------------------------------------------------------------------ connection problems

def test_unreachable_daemon_exits_3(mesh: Daemon) -> None:
    r = cli(mesh, "--orchestrator", f"127.0.0.1:{free_port()}", "-c", "/echo run hi")
    assert r.returncode == 3
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("autogpt: cannot reach orchgpt at 127.0.0.1:"), r.stderr


@pytest.mark.parametrize(("address", "message"), [
    ("nonsense", "autogpt: malformed address 'nonsense': expected HOST:PORT, e.g. 127.0.0.1:8443"),
    ("host:http", "autogpt: malformed address 'host:http': port 'http' is not a number"),
    ("127.0.0.1:70000", "autogpt: malformed address '127.0.0.1:70000': port 70000 is out of range 0-65535"),
])
def test_malformed_address_exits_3(mesh: Daemon, address: str, message: str) -> None:
    r = cli(mesh, "-c", "/echo run hi", env=env_for(mesh, ORCHGPT_ADDRESS=address))
    assert (r.returncode, r.stderr.splitlines()) == (3, [message])


def test_orchestrator_address_alias_is_read(mesh: Daemon) -> None:
    env = env_for(mesh)
    del env["ORCHGPT_ADDRESS"]
    env["ORCHESTRATOR_ADDRESS"] = mesh.address
    r = cli(mesh, "-c", "/echo run via alias", env=env)
    assert r.returncode == 0, r.stderr
    assert "via alias" in r.stdout.splitlines()


def test_certificate_from_another_ca_is_refused(mesh: Daemon, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_dir(other)
    # our client certificate is not signed by the mesh CA (we trust the right CA)
    r = cli(mesh, "--ca", str(mesh.certs / "ca.pem"), "--cert", str(other / "cli.pem"),
            "--key", str(other / "cli-key.pem"), "-c", "/echo run hi")
    assert r.returncode == 3
    err = r.stderr.splitlines()
    assert len(err) == 1 and "refused the TLS handshake" in err[0], r.stderr
    # the whole directory from another mesh: the server is not trusted either
    r = cli(mesh, "--certs", str(other), "-c", "/echo run hi")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1 and "TLS handshake" in r.stderr


def test_missing_certificates_exit_3(mesh: Daemon, tmp_path: Path) -> None:
    r = cli(mesh, "--certs", str(tmp_path / "nowhere"), "-c", "/echo run hi")
    assert r.returncode == 3
    assert r.stderr.splitlines() == [
        f"autogpt: CA certificate not found: {tmp_path / 'nowhere' / 'ca.pem'} "
        "(create certificates with `orchgpt certs init`)"]


def test_help_and_version() -> None:
    r = subprocess.run([sys.executable, "-m", "orchgpt_cli", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for text in ("exit codes:", "2  usage error", "3  connection problem", "--orchestrator HOST:PORT",
                 "ORCHESTRATOR_ADDRESS", '"type": "event"', "--approve", "--yes"):
        assert text in r.stdout
    r = subprocess.run([sys.executable, "-m", "orchgpt_cli", "--version"], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, "autogpt 0.1.0")
    r = subprocess.run([sys.executable, "-m", "orchgpt_cli", "--frobnicate"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr


# ------------------------------------------------------------------ approvals

class AskingAgent(Agent):
    """Asks for approval of `calls` tool calls and reports the answers."""

    type = "asker"
    capabilities = ("asker",)

    async def run(self, ctx: TaskContext) -> Outcome:
        answers = []
        for i in range(int(ctx.task.options.get("calls", "1"))):
            r = await ctx.approve("write_file", json.dumps({"path": f"f{i}.txt"}), f"write f{i}.txt")
            answers.append(f"{r.decision}:{r.count}" + (f":{r.feedback}" if r.feedback else ""))
        return Outcome(output=" ".join(answers))


@pytest.fixture
async def asker(mesh: Daemon, tmp_path: Path) -> AsyncIterator[Link]:
    name = f"asker-{tmp_path.name[-12:]}".replace("_", "-")
    issue(mesh.certs, name, "agent")
    link = Link(AskingAgent(), name, mesh.address, paths_for(mesh.certs, name), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    await asyncio.wait_for(link.connected.wait(), 15)
    yield link
    await link.stop(grace=1)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_approval_is_rejected_without_yes(mesh: Daemon, asker: Link) -> None:
    r = await asyncio.to_thread(cli, mesh, "-c", "/asker run write it --approve")
    assert r.returncode == 0, r.stderr
    assert "reject:1:rejected: the user is not there to approve (one-shot mode without --yes)" in r.stdout
    assert "approval needed: write_file: write f0.txt" in r.stdout
    assert r.stderr.splitlines() == [
        f"autogpt: task {r.stdout.split()[1].rstrip(']')} asks to run write_file (write f0.txt): rejected; "
        "pass --yes to approve tool calls in one-shot mode, or use the interactive prompt"]


async def test_yes_approves_every_call(mesh: Daemon, asker: Link) -> None:
    r = await asyncio.to_thread(cli, mesh, "--yes", "--approve", "-c", "/asker run write -o calls=2")
    assert r.returncode == 0, r.stderr
    assert "approve:1 approve:1" in r.stdout.splitlines()
    assert r.stderr.count("approved (--yes)") == 2



# ------------------------------------------------------------------ sub-tasks

class DelegatingAgent(Agent):
    """Hands its input to an echo agent (DELEGATE_TASK) and reports the sub-task's output."""

    type = "lead"

    async def run(self, ctx: TaskContext) -> Outcome:
        ctx.log("delegating to echo")
        r = await ctx.delegate(Delegation("echo", f"sub: {ctx.task.input}", action=Action.RUN))
        return Outcome(output=f"echo said {r.output!r}")


async def test_sub_task_events_are_shown_with_their_own_tag(mesh: Daemon, tmp_path: Path) -> None:
    issue(mesh.certs, "lead-1", "agent")
    link = Link(DelegatingAgent(), "lead-1", mesh.address, paths_for(mesh.certs, "lead-1"), tmp_path / "ws")
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 15)
        r = await asyncio.to_thread(cli, mesh, "-c", "/lead run plan it")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        parent = lines[0].split("]")[0] + "]"
        assert parent.startswith("[lead ")
        sub = [x for x in lines if x.startswith("[echo ")]
        assert sub and sub[0].endswith("queued for echo")
        assert any(x.endswith("] sub: plan it") for x in sub)  # the sub-task's output, tagged with it
        assert any(x.startswith("[echo ") and " succeeded (" in x for x in sub)
        assert "echo said 'sub: plan it'" in lines
        assert lines[-1].startswith(parent + " succeeded")
    finally:
        await link.stop(grace=1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
