"""Issue 21 on separate network hosts (Linux network namespaces, tests/support/netns.py): the
daemon on one host, agents on others with their own certificates and disks, the CLI on another.
Real processes, real TLS naming the daemon's address, real TCP over a bridge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.mesh import ROOT, wait_for
from tests.support.netns import Net, netns_fixture  # noqa: F401  (the fixture `netns`)
from tests.support.netns_mesh import agent_on, cli_argv, cli_on, daemon_on, sha256

pytestmark = pytest.mark.timeout(60)


def result_of(events: list[dict]) -> dict:  # type: ignore[type-arg]
    results = [e for e in events if e.get("kind") == "result"]
    assert results, events
    return results[-1]


def test_a_file_written_on_another_host_is_fetched_by_the_client(netns: Net, tmp_path: Path) -> None:
    """The remote-agents-lose-their-files finding, across hosts: the agent writes a file on its
    host, the client on a third host fetches the same bytes; the daemon's host never had it on
    its own disk outside the artifact store."""
    dh, ah, ch = netns.host("daemon"), netns.host("agent"), netns.host("client")
    d = daemon_on(dh, tmp_path)
    agent, ws = agent_on(ah, d, "far")
    wait_for(lambda: '"registered"' in agent.log(), 20, what=f"the agent to register:\n{agent.log()}")
    ev = cli_on(ch, d, '/echo run "bytes from host two" -o file=out/file.txt --id far-1', tmp_path / "cli")
    res = result_of(ev)
    assert res["result"]["state"] == "succeeded", ev
    written = ws / "far-1" / "out" / "file.txt"
    assert written.read_bytes() == b"bytes from host two"
    assert not list((d.data_dir).rglob("file.txt"))  # only as a blob named by its hash
    got = cli_on(ch, d, "/fetch far-1 out/file.txt got.txt", tmp_path / "cli")
    assert got, got
    assert sha256(tmp_path / "cli" / "got.txt") == sha256(written)


def test_a_cut_link_mid_task_the_agent_reconnects_and_the_task_runs_once(netns: Net, tmp_path: Path) -> None:
    """The agent's cable is unplugged while its task runs (both ends notice: no heartbeats),
    then plugged back: the agent reconnects, the task finishes once (the agent ran it once; no
    second run on reconnect) and its file reaches the client."""
    dh, ah, ch = netns.host("daemon"), netns.host("agent"), netns.host("client")
    d = daemon_on(dh, tmp_path, "--no-spawn", "--reconnect-grace", "30")
    agent, _ = agent_on(ah, d, "far")
    wait_for(lambda: '"registered"' in agent.log(), 20, what="the agent to register")
    record = tmp_path / "runs.txt"
    out = tmp_path / "cli-out.jsonl"
    with open(out, "wb") as f:
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        cli = ch.popen(
            [
                *cli_argv(d, ch),
                "-c",
                f'/echo run "cut me" -o delay=4 -o file=cut.txt -o record={record} --id cut-1',
            ],
            log=f,
            env=env,
            cwd=tmp_path,
        )
    wait_for(lambda: "running on far" in out.read_text(), 20, what="the task to run on the remote agent")
    ah.cut()
    try:
        wait_for(
            lambda: '"orchestrator_silent"' in agent.log() or '"disconnected"' in agent.log(),
            15,
            what="the agent to notice the cut",
        )
        wait_for(lambda: '"agent_lost"' in d.log(), 15, what="the daemon to notice the cut")
    finally:
        ah.restore()
    assert cli.wait(20) == 0, out.read_text()
    wait_for(lambda: agent.log().count('"registered"') >= 2, 15, what="the agent to reconnect")
    res = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")][-1]
    assert res["kind"] == "result" and res["result"]["state"] == "succeeded", res
    assert record.read_text().splitlines() == ["cut-1 cut me"]  # ran once
    assert agent.log().count('"task_done"') == 1
    got = cli_on(ch, d, "/fetch cut-1 cut.txt cut.txt", tmp_path / "cli")
    assert got and (tmp_path / "cli" / "cut.txt").read_bytes() == b"cut me"


def test_an_upload_cut_mid_file_resumes_from_the_daemons_offset(netns: Net, tmp_path: Path) -> None:
    """A big file on a slow link; the cable is pulled mid-upload and plugged back: the agent
    reconnects, asks where to go on and sends the rest only; the bytes fetched by the client
    hash as the agent's file does, and the task ran once."""
    dh, ah, ch = netns.host("daemon"), netns.host("agent"), netns.host("client")
    # heartbeats every 1 s (silence for 3 s is a loss): on the slowed link they queue behind data
    d = daemon_on(dh, tmp_path, "--no-spawn", "--reconnect-grace", "30", "--heartbeat-interval", "1")
    agent, ws = agent_on(ah, d, "far")
    wait_for(lambda: '"registered"' in agent.log(), 20, what="the agent to register")
    size = 6 * 1024 * 1024
    shape = [
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "tbf",
        "rate",
        "16mbit",
        "burst",
        "32kb",
        "latency",
        "500ms",
    ]
    done = ah.run(shape, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot slow the link down with tc: {done.stderr.strip()}")
    record = tmp_path / "runs.txt"
    out = tmp_path / "cli-out.jsonl"
    with open(out, "wb") as f:
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        cli = ch.popen(
            [
                *cli_argv(d, ch),
                "-c",
                f"/echo run big -o file=big.bin -o file_bytes={size} -o record={record} --id big-1",
            ],
            log=f,
            env=env,
            cwd=tmp_path,
        )
    part = d.data_dir / "artifacts" / "tmp"
    wait_for(
        lambda: any(p.stat().st_size >= size // 4 for p in part.glob("*.part")),
        20,
        what="a quarter of the file to reach the daemon",
    )
    ah.cut()
    try:
        wait_for(
            lambda: '"artifact_upload_kept"' in d.log(),
            15,
            what="the daemon to keep the cut upload",
        )
        wait_for(
            lambda: '"disconnected"' in agent.log(),
            15,
            what="the agent to see the cut",
        )
    finally:
        ah.run(["tc", "qdisc", "del", "dev", "eth0", "root"], timeout=10)
        ah.restore()
    assert cli.wait(20) == 0, out.read_text()
    wait_for(lambda: '"artifact_stored"' in d.log(), 15, what="the file to be stored")
    resumed = [json.loads(x) for x in agent.log().splitlines() if '"artifact_upload_resuming"' in x]
    assert resumed and resumed[0]["offset"] >= size // 4, agent.log()
    uploaded = [json.loads(x) for x in agent.log().splitlines() if '"artifacts_uploaded"' in x]
    # the completed upload sent only what the daemon lacked (never the whole file again)
    assert uploaded and uploaded[-1]["bytes"] == size - resumed[-1]["offset"] < size, agent.log()
    assert record.read_text().splitlines() == ["big-1 big"]  # ran once
    cli_on(ch, d, "/fetch big-1 big.bin big.bin", tmp_path / "cli")
    assert sha256(tmp_path / "cli" / "big.bin") == sha256(ws / "big-1" / "big.bin")


def test_a_sub_task_on_another_host_gets_its_inputs_files(netns: Net, tmp_path: Path) -> None:
    """A parent task delegates a writer (an echo sub-task writing data.txt) and then a git
    sub-task handed the writer's result as input; the git agent runs on a host of its own,
    fetches data.txt from the daemon (it may read its inputs' files, owner-checked) and commits
    it. Nothing of the writer's host is visible to it."""
    dh, ch = netns.host("daemon"), netns.host("client")
    d = daemon_on(dh, tmp_path)
    lead, _ = agent_on(netns.host("lead"), d, "lead")
    writer, _ = agent_on(netns.host("writer"), d, "writer")
    committer, git_ws = agent_on(netns.host("vcs"), d, "committer", "git")
    for a in (lead, writer, committer):
        wait_for(lambda a=a: '"registered"' in a.log(), 20, what=f"{a.name} to register:\n{a.log()}")
    ev = cli_on(
        ch,
        d,
        "/echo run hello -o children=1 -o child_file=data.txt -o then=git --id par-1",
        tmp_path / "cli",
    )
    res = result_of(ev)
    assert res["result"]["state"] == "succeeded", res
    fetched = [json.loads(x) for x in committer.log().splitlines() if '"input_fetched"' in x]
    assert [f["path"] for f in fetched] == ["data.txt"], committer.log()
    repo = next(p.parent for p in git_ws.glob("*/.git"))
    show = ah_git(repo, "show", "HEAD~0:data.txt")
    log = ah_git(repo, "log", "--name-only", "--format=%s")
    assert show == "hello/0" and "data.txt" in log, log
    # the git agent's workspace holds no stray download
    assert not list(repo.rglob("*.orchgpt-part"))
    # only the inputs of a task it runs: the parent's own task is not the agent's to read
    assert "input_not_fetched" not in committer.log()


def ah_git(repo: Path, *args: str) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
