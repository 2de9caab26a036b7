"""Settings: flags over environment over the TOML file; bad values named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.config import load_settings
from orchgpt.errors import ConfigError


def test_precedence_flags_over_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "orchgpt.toml"
    toml.write_text('listen = "127.0.0.1:9001"\nmax_local_agents = 3\ngrace_period = 7.5\n')
    monkeypatch.delenv("ORCHGPT_ADDRESS", raising=False)
    s = load_settings({}, toml)
    assert (s.listen, s.max_local_agents, s.grace_period) == ("127.0.0.1:9001", 3, 7.5)
    monkeypatch.setenv("ORCHGPT_MAX_LOCAL_AGENTS", "5")
    s = load_settings({}, toml)
    assert s.max_local_agents == 5 and s.listen == "127.0.0.1:9001"
    s = load_settings({"max_local_agents": 9, "listen": None}, toml)
    assert s.max_local_agents == 9
    monkeypatch.setenv("ORCHGPT_ADDRESS", "0.0.0.0:8555")
    assert load_settings({}, toml).listen == "0.0.0.0:8555"


@pytest.mark.parametrize(
    ("flags", "text", "message"),
    [
        ({"listen": "nohost"}, "", "expected HOST:PORT"),
        ({"listen": "127.0.0.1:99999"}, "", "out of range"),
        ({"max_local_agents": -1}, "", "max_local_agents"),
        ({}, "listen = [1,2]\n", "listen"),
        ({}, "not toml at all [", "not valid TOML"),
        ({}, "unknown_setting = 1\n", "unknown_setting"),
    ],
)
def test_bad_settings_name_the_problem(
    tmp_path: Path, flags: dict, text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCHGPT_ADDRESS", raising=False)
    toml = None
    if text:
        toml = tmp_path / "c.toml"
        toml.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_settings(flags, toml)
    assert message in str(ei.value)


def test_serve_help_documents_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchgpt", "serve", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    from orchgpt.config import Settings

    for name in Settings.model_fields:
        if name != "config_file":
            assert f"ORCHGPT_{name.upper()}" in out, name
