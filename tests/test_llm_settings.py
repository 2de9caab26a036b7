"""AgentSettings.from_env: endpoints, per-agent overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.errors import AgentdError
from agentd.settings import AgentSettings, NoModelConfigured, SettingsError


def test_no_model_configured_is_a_clear_error() -> None:
    with pytest.raises(NoModelConfigured, match=r"OPENAI_API_KEY.*OPENAI_BASE_URL") as ei:
        AgentSettings.from_env("backend", {})
    assert isinstance(ei.value, AgentdError)


def test_openai_defaults() -> None:
    s = AgentSettings.from_env("backend", {"OPENAI_API_KEY": "sk-abc"})
    assert s.smart.base_url is None and s.smart.url == "https://api.openai.com/v1"
    assert s.smart.model == "gpt-4o-mini" and s.fast.model == "gpt-4o-mini"
    assert s.fast.api_key == "sk-abc" and s.smart.tool_mode == "auto" and s.smart.fold_system is None
    assert "sk-abc" not in repr(s)


def test_local_server_and_overrides(tmp_path: Path) -> None:
    env = {
        "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1",
        "ORCHGPT_FAST_BASE_URL": "http://127.0.0.1:8081/v1",
        "ORCHGPT_FAST_API_KEY": "fast-key",
        "ORCHGPT_ARCHITECT_MODEL": "big-model",
        "ORCHGPT_ARCHITECT_API_KEY": "arch-key",
        "ORCHGPT_WORKSPACE_ROOT": str(tmp_path),
        "ORCHGPT_ALLOW_FETCH": "false",
        "ORCHGPT_MAX_STEPS": "5",
        "ORCHGPT_TOKEN_BUDGET": "1234",
        "ORCHGPT_TOOL_MODE": "compat",
        "ORCHGPT_FOLD_SYSTEM": "true",
        "ORCHGPT_CONTEXT_WINDOW": "4096",
        "ORCHGPT_SANDBOX_TIMEOUT": "7.5",
    }
    arch = AgentSettings.from_env("architect", env)
    assert (arch.smart.url, arch.smart.model, arch.smart.api_key) == (
        "http://127.0.0.1:8080/v1",
        "big-model",
        "arch-key",
    )
    assert (arch.fast.url, arch.fast.model, arch.fast.api_key) == ("http://127.0.0.1:8081/v1", "", "fast-key")
    assert arch.smart.tool_mode == "compat" and arch.smart.fold_system is True and arch.fast.context_window == 4096
    assert arch.workspace_root == tmp_path and arch.allow_fetch is False
    assert (arch.max_steps, arch.token_budget, arch.sandbox_timeout_s) == (5, 1234, 7.5)
    backend = AgentSettings.from_env("backend", env)
    assert backend.smart.model == "" and backend.smart.api_key is None  # asks the server for its model


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("ORCHGPT_MAX_STEPS", "many", "not an integer"),
        ("ORCHGPT_MAX_STEPS", "0", "at least 1"),
        ("ORCHGPT_TOOL_MODE", "magic", "auto, native, compat"),
        ("ORCHGPT_ALLOW_FETCH", "perhaps", "not a boolean"),
        ("ORCHGPT_LLM_TIMEOUT", "soon", "not a number"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle) as ei:
        AgentSettings.from_env("backend", {"OPENAI_API_KEY": "k", name: value})
    assert name in str(ei.value)
