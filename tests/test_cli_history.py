"""Issue 6: history read from the store survives a daemon restart, in the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.mesh import Daemon

pytestmark = pytest.mark.timeout(120)


def cli(d: Daemon, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update({"ORCHGPT_ADDRESS": d.address, "ORCHGPT_CERTS": str(d.certs)})
    return subprocess.run(
        [sys.executable, "-m", "orchgpt_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=d.workdir,
    )


def test_history_sessions_and_the_gallery_survive_a_restart(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory().start()
    r = cli(d, "--json", stdin='/echo run "first words" --id hist-1\n/echo run "second words" --id hist-2\n')
    assert r.returncode == 0, r.stderr
    port = d.port
    assert d.stop() == 0
    d.start(port=port)  # a new process on the same store

    hist = cli(d, "-c", "/history 5")
    assert hist.returncode == 0, hist.stderr
    assert "hist-1" in hist.stdout and "hist-2" in hist.stdout
    task = cli(d, "-c", "/task hist-2")
    assert task.returncode == 0 and "second words" in task.stdout and "succeeded" in task.stdout
    sessions = cli(d, "--json", "-c", "/sessions")
    assert sessions.returncode == 0
    [row] = [json.loads(line) for line in sessions.stdout.splitlines() if line.strip()]
    [s] = row["sessions"]  # both commands ran in one session
    assert s["title"] == "/echo run first words" and s["task_count"] == 2
    # publish the session to the gallery and find it there
    sid = s["session_id"]
    pub = cli(d, "-c", f"/publish {sid} demo echo")
    assert pub.returncode == 0, pub.stderr + pub.stdout
    gallery = cli(d, "-c", "/gallery")
    assert gallery.returncode == 0 and sid[:8] in gallery.stdout and "demo" in gallery.stdout
