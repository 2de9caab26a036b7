"""Agent types declared in TOML files: validation names the file, the key and the problem;
`orchgpt agents check` validates a directory without starting anything (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.agent_defs import (
    TOOLS,
    AgentDefError,
    AgentDefinition,
    default_dirs,
    load_dir,
    load_dirs,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
SMALLEST = """name = "reviewer"
description = "Reviews code for bugs and clarity"
system_prompt = "You are a meticulous code reviewer."
model = "smart"
tools = ["read_file"]
"""


def check(d: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "orchgpt", "agents", "check", str(d)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_the_issues_smallest_file_loads_as_written(tmp_path: Path) -> None:
    (tmp_path / "reviewer.toml").write_text(SMALLEST)
    defs = load_dir(tmp_path)
    ad = defs["reviewer"]
    assert ad.tools == ["read_file"] and ad.model == "smart" and ad.approval == "never"
    assert AgentDefinition.from_json(ad.to_json()) == ad  # what travels over the mesh


def test_examples_pass_orchgpt_agents_check() -> None:
    r = check(ROOT / "examples" / "agents")
    assert r.returncode == 0, r.stderr
    for name in ("coder", "reviewer", "tester", "researcher", "writer", "librarian"):
        assert name in r.stdout
    assert load_dir(ROOT / "examples" / "agents")["librarian"].mcp["files"].command == "python"


def test_a_bad_key_fails_the_check_naming_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "reviewer.toml").write_text(SMALLEST)
    bad = tmp_path / "coder.toml"
    bad.write_text(SMALLEST.replace("reviewer", "coder") + "max_stepz = 3\n")
    r = check(tmp_path)
    assert r.returncode == 1
    assert f"{bad}: max_stepz: unknown key" in r.stderr
    assert "reviewer.toml" not in r.stderr  # the good file is not blamed


@pytest.mark.parametrize(
    "extra, key, problem",
    [
        ('tools = ["read_file", "rm_rf"]', "tools", "unknown tool 'rm_rf'"),
        ('approval = "sometimes"', "approval", "'never', 'tools' or 'always'"),
        ("max_steps = 0", "max_steps", "greater than or equal to 1"),
        ("temperature = 3.5", "temperature", "less than or equal to 2"),
        ('[mcp.files]\ncommand = "x"\nurl = "http://h/mcp"', "mcp.files", "either `command`"),
        ('[mcp.files]\nurl = "ftp://h/mcp"', "mcp.files.url", "not an http(s) URL"),
        ('[mcp.files]\ncommand = "x"\ncwd = "/"', "mcp.files.cwd", "unknown key"),
    ],
)
def test_each_problem_names_its_key(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    text = SMALLEST.replace('tools = ["read_file"]\n', "") if extra.startswith("tools") else SMALLEST
    f = tmp_path / "r.toml"
    f.write_text(text + extra + "\n")
    with pytest.raises(AgentDefError) as info:
        load_dir(tmp_path)
    [p] = info.value.problems
    assert p.startswith(f"{f}: {key}: ") and problem in p, p


def test_missing_prompt_bad_toml_duplicates_and_reserved_names(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('name = "a"\n')
    (tmp_path / "b.toml").write_text('name = "b\n')
    (tmp_path / "c.toml").write_text(SMALLEST)
    (tmp_path / "d.toml").write_text(SMALLEST)
    (tmp_path / "e.toml").write_text(SMALLEST.replace('"reviewer"', '"echo"'))
    with pytest.raises(AgentDefError) as info:
        load_dirs([tmp_path], reserved=frozenset({"echo"}))
    text = "\n".join(info.value.problems)
    assert f"{tmp_path / 'a.toml'}: system_prompt: required" in text
    assert f"{tmp_path / 'b.toml'}: not valid TOML" in text
    assert f"{tmp_path / 'd.toml'}: name: 'reviewer' is declared already by {tmp_path / 'c.toml'}" in text
    assert f"{tmp_path / 'e.toml'}: name: 'echo' is a built-in agent type" in text


def test_default_dirs_are_beside_the_config_and_in_the_data_dir(tmp_path: Path) -> None:
    assert default_dirs(None, tmp_path / "etc" / "orchgpt.toml", tmp_path / "data") == [
        tmp_path / "etc" / "agents.d",
        tmp_path / "data" / "agents.d",
    ]
    assert default_dirs(tmp_path / "mine", tmp_path / "x.toml", tmp_path / "data") == [tmp_path / "mine"]
    assert load_dirs([tmp_path / "missing"]) == {}


def test_the_documented_tool_registry_is_what_agentd_offers() -> None:
    from agentd.tools import TOOLS as AGENTD_TOOLS
    from agentd.tools_agents import ASK_AGENT

    assert set(TOOLS) == set(AGENTD_TOOLS) | {ASK_AGENT.spec.name}
