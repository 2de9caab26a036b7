"""Issue 4's "done when", as a user runs it: `autogpt -c` against a real orchgpt whose
spawned architect and backend agents talk to the scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import Daemon
from tests.support.scripted_openai import ScriptedOpenAI
from tests.support.team_script import TeamScript

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def model() -> Any:
    with ScriptedOpenAI(responder=TeamScript(), models=("gpt-4o-mini",)) as srv:
        yield srv


def autogpt(d: Daemon, command: str) -> tuple[int, list[dict[str, Any]], str]:
    env = {**os.environ, "ORCHGPT_ADDRESS": d.address, "ORCHGPT_CERTS": str(d.certs)}
    r = subprocess.run(
        [sys.executable, "-m", "orchgpt_cli", "--json", "-c", command],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.strip()], r.stderr


def result_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    final = events[-1]
    assert final["kind"] == "result", final
    return final["result"]


def test_architect_create_leaves_the_document_and_the_diagram(daemon_factory, model) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--heartbeat-interval", "2", env=model.env(api_key="test")).start()
    code, events, err = autogpt(d, '/architect create "fastapi app" | python')
    assert code == 0, err
    result = result_of(events)
    ws = Path(result["workspace"])
    doc = (ws / "ARCHITECTURE.md").read_text()
    assert "## Components" in doc and "## Endpoints" in doc
    assert (ws / "architecture.mmd").read_text().startswith("flowchart")
    assert {a["path"] for a in result["artifacts"]} >= {"ARCHITECTURE.md", "architecture.mmd"}
    kinds = [e["kind"] for e in events]
    assert "step" in kinds and "artifact" in kinds and "token" in kinds  # streamed as it happened
    assert result["usage"]["prompt_tokens"] > 0


def test_backend_create_leaves_code_whose_tests_pass_in_the_sandbox(daemon_factory, model) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = daemon_factory("--heartbeat-interval", "2", env=model.env(api_key="test")).start()
    code, events, err = autogpt(d, '/backend create "todo api with fastapi" | python')
    assert code == 0, err
    result = result_of(events)
    assert result["data"]["tests_passed"] == "true"
    assert "passed" in result["data"]["test_output"]
    ws = Path(result["workspace"])
    assert (ws / "app.py").is_file() and list(ws.glob("test_*.py"))
    # the code's own tests pass here too, outside the sandbox
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
