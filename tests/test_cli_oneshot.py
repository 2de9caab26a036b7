"""`autogpt -c ...` and piped commands, end to end against a real `orchgpt serve` over mutual TLS.

The CLI runs as a subprocess (`python -m orchgpt_cli`) exactly as a user or a
CI script runs it; the daemon spawns real echo agents. The approval tests add a
remote agent (agentd's Link in this process, with its own certificate) whose
tasks ask for approval of a tool call.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

from tests.support import cli_oneshot
from tests.support.cli_oneshot import cli, env_for, tasks_in
from tests.support.mesh import Daemon

# The shared fixture (pytest finds a fixture by its name in the test's module).
mesh = cli_oneshot.mesh

JSON_KEYS = {
    "type",
    "kind",
    "task_id",
    "seq",
    "state",
    "text",
    "agent_type",
    "agent_id",
    "parent_task_id",
    "ts_ms",
    "data",
    "artifact",
    "approval",
    "result",
}


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
    assert (
        len(err) == 1 and err[0].startswith("autogpt: task ") and err[0].endswith("(echo) failed: the disk is full")
    ), r.stderr
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
        'autogpt: line 2: unbalanced " quote at column 11: close it, e.g. /echo run "hello world" | python'
    ]
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
    p = subprocess.Popen(
        [sys.executable, "-m", "orchgpt_cli", "--json", "-c", "/echo run slow -o delay=30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(mesh),
    )
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
    r = cli(
        mesh,
        "--session",
        "meta-plain-1",
        "-c",
        "/echo run remembered",
        "-c",
        "/agents",
        "-c",
        "/tasks",
        "-c",
        "/history 3",
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "TYPE  AGENT" in out and "echo" in out and "idle" in out
    task_line = next(x for x in out.splitlines() if x.endswith("remembered") and " run " in x)
    short = task_line.split()[0]
    assert len(short) == 8
    assert "1 task in this session" in out
    assert "/echo run remembered  -> succeeded: remembered" in out
    r = cli(mesh, "-c", f"/task {short}", "-c", f"/logs {short}")
    assert r.returncode == 0, r.stderr
    assert "  command   /echo run remembered" in r.stdout and "succeeded" in r.stdout
    assert "events (" in r.stdout and "queued for echo" in r.stdout


def test_meta_commands_in_json(mesh: Daemon) -> None:
    r = cli(
        mesh,
        "--json",
        "--session",
        "meta-json-1",
        "-c",
        "/echo run for the gallery",
        "-c",
        "/agents",
        "-c",
        "/tasks",
        "-c",
        "/sessions",
        "-c",
        "/publish meta-json-1 demo, fastapi",
        "-c",
        "/gallery",
        "-c",
        "/session meta-json-1",
    )
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
