"""Issue 14's "done when" for graphs, as a user runs it: `/graph create` the shipped
echo-pipeline (prints its id), `/graph run ID '{}'` prints the final output, `/task` shows the
three node executions with their inputs and outputs; then /graphs, /graph show, /graph delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mesh import Daemon

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "graphs" / "echo-pipeline.json"


def autogpt(d: Daemon, shim: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHGPT_", "ORCHESTRATOR_"))}
    env.update(
        {
            "ORCHGPT_ADDRESS": d.address,
            "ORCHGPT_CERTS": str(d.certs),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(shim)]),
            "COLUMNS": "250",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "orchgpt_cli", *args],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """This checkout's cli/ importable as orchgpt_cli (as setup.py installs it)."""
    d = tmp_path / "shim"
    d.mkdir()
    (d / "orchgpt_cli").symlink_to(ROOT / "cli", target_is_directory=True)
    return d


def test_echo_pipeline_done_when(daemon: Daemon, shim: Path) -> None:
    made = autogpt(daemon, shim, "-c", f"/graph create {EXAMPLE.relative_to(ROOT)}")
    assert made.returncode == 0, made.stderr + made.stdout
    gid = made.stdout.split()[0]
    assert "echo-pipeline: created" in made.stdout

    ran = autogpt(daemon, shim, "-c", f"/graph run {gid} '{{}}'")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert '{"order": "42", "said": "hello mesh, order 42 is ready"}' in ran.stdout

    as_json = autogpt(daemon, shim, "--json", "-c", f'/graph run {gid} \'{{"who": "you"}}\'')
    assert as_json.returncode == 0, as_json.stderr
    final = [json.loads(x) for x in as_json.stdout.splitlines() if x.strip()][-1]
    assert json.loads(final["result"]["output"])["said"] == "hello you, order 42 is ready"
    task_id = final["result"]["task_id"]

    shown = autogpt(daemon, shim, "-c", f"/task {task_id}")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "node executions (3)" in out, out
    rows = {
        line.split()[0]: line
        for line in out.splitlines()[
            out.splitlines().index(
                next(x for x in out.splitlines() if x.startswith("node executions"))
            )
            + 2 :
        ]
        if line.strip()
    }
    assert rows["greet"].split()[1:3] == ["text.template", "completed"]
    assert (
        '"who": "you"' in rows["greet"]
        and '{"text": "hello you, order 42 is ready"}' in rows["greet"]
    )
    assert (
        rows["say"].split()[1:3] == ["agent", "completed"] and '"result": "hello you' in rows["say"]
    )
    assert (
        rows["find"].split()[1:3] == ["text.match", "completed"]
        and '"positive": "42"' in rows["find"]
    )

    listed = autogpt(daemon, shim, "-c", "/graphs")
    assert listed.returncode == 0 and gid in listed.stdout and "echo-pipeline" in listed.stdout
    show = autogpt(daemon, shim, "-c", f"/graph show {gid}")
    assert (
        show.returncode == 0
        and "greet.text -> say.input" in show.stdout
        and "text.match" in show.stdout
    )
    bad = autogpt(daemon, shim, "-c", f"/graph run {gid} '[1]'")
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    gone = autogpt(daemon, shim, "-c", f"/graph delete {gid}")
    assert gone.returncode == 0 and "deleted (1 version)" in gone.stdout
    missing = autogpt(daemon, shim, "-c", f"/graph run {gid} '{{}}'")
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_graph_create_reports_validation_errors(daemon: Daemon, shim: Path, tmp_path: Path) -> None:
    bad = json.loads(EXAMPLE.read_text())
    bad["links"][1]["from"] = "say.artifacts"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    r = autogpt(daemon, shim, "-c", f"/graph create {f}")
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        "link say.artifacts -> find.text: type mismatch: output pin 'artifacts' of node 'say' is "
        "array, input pin 'text' of node 'find' expects string"
    ) in r.stderr
    assert autogpt(daemon, shim, "-c", "/graphs").stdout.strip().endswith("0 graphs")
