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
    short = ran.stdout.split("]")[0].split()[-1]  # "[graph 1a2b3c4d] queued ..."

    shown = autogpt(daemon, shim, "-c", f"/task {short}", "-c", "/graphs", "-c", f"/graph show {gid}")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.splitlines()
    at = out.index(next(x for x in out if x.startswith("node executions")))
    assert out[at] == "node executions (3)"
    rows = {line.split()[0]: line for line in out[at + 2 : at + 5]}
    assert rows["greet"].split()[1:3] == ["text.template", "completed"]
    assert '"who": "mesh"' in rows["greet"]
    assert '{"text": "hello mesh, order 42 is ready"}' in rows["greet"]
    assert rows["say"].split()[1:3] == ["agent", "completed"]
    assert '"input": "hello mesh' in rows["say"] and '"result": "hello mesh' in rows["say"]
    assert rows["find"].split()[1:3] == ["text.match", "completed"]
    assert '"positive": "42"' in rows["find"]
    rest = "\n".join(out[at + 5 :])
    assert gid in rest and "echo-pipeline" in rest  # /graphs
    assert "greet.text -> say.input" in rest and "text.match" in rest  # /graph show

    bad = autogpt(daemon, shim, "-c", f"/graph run {gid} '[1]'")
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    gone = autogpt(daemon, shim, "-c", f"/graph delete {gid}", "-c", f"/graph run {gid} '{{}}'")
    assert "deleted (1 version)" in gone.stdout
    assert gone.returncode != 0 and "not found" in gone.stderr


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
