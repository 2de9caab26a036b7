"""Model capabilities as data (agentd.llm.profiles): seeded, learnt once per server and
model and shared by every LLM of the process, and overridden by the configuration."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from agentd.llm import LLM
from agentd.llm.profiles import PROFILES, ModelProfile, ProfileCache, seed_for
from agentd.llm.rejection import MAX_COMPLETION_TOKENS, SYSTEM_ROLE, TOOLS, rejected_features
from agentd.settings import AgentSettings
from tests.support.scripted_openai import ScriptedOpenAI, compat_call, error, text, tool_call
from tests.test_llm_chat import RUN, USER

pytestmark = pytest.mark.timeout(60)


def settings(srv: ScriptedOpenAI, model: str = "m", **kw: Any) -> AgentSettings:
    return AgentSettings.for_endpoint(srv.base_url, api_key="k", model=model, backoff_s=0.01, timeout_s=5, **kw)


async def test_server_without_tools_compat_is_chosen_once_for_every_llm() -> None:
    """The second task (a new LLM, as each agent session makes) does not send tools again."""
    with ScriptedOpenAI(
        [compat_call("run", {"cmd": "ls"}), compat_call("run", {"cmd": "pwd"})], reject_tools=True
    ) as srv:
        async with LLM(settings(srv)) as first:
            res = await first.chat(USER, tools=[RUN])
        async with LLM(settings(srv)) as second:
            res2 = await second.chat(USER, tools=[RUN])
            prof = await second.profile()
    assert res.mode == res2.mode == "compat" and res2.tool_calls[0].arguments == {"cmd": "pwd"}
    reqs = srv.chat_requests
    assert len(reqs) == 3  # rejected once; compat; compat straight away in the next LLM
    assert ["tools" in r for r in reqs] == [True, False, False]
    assert prof.tools is False and "tools" in prof.learnt and prof.tool_mode() == "compat"


async def test_server_rejecting_the_system_role_is_folded_once_for_every_llm() -> None:
    with ScriptedOpenAI([text("one"), text("two")], reject_system=True) as srv:
        async with LLM(settings(srv)) as first:
            assert (await first.chat(USER)).content == "one"
        async with LLM(settings(srv)) as second:
            assert (await second.chat(USER)).content == "two"
    reqs = srv.chat_requests
    assert len(reqs) == 3
    assert reqs[0]["messages"][0]["role"] == "system"
    assert reqs[2]["messages"] == [{"role": "user", "content": "You are terse.\n\nSay hello."}]
    assert PROFILES.get(srv.base_url, "m").system_role is False


async def test_learnt_profiles_are_per_server_and_model() -> None:
    cache = ProfileCache()
    with ScriptedOpenAI([compat_call("run", {"cmd": "ls"}), tool_call("run", {"cmd": "ls"})], reject_tools=True) as srv:
        async with LLM(settings(srv, model="a"), cache) as llm:
            await llm.chat(USER, tools=[RUN])
        srv.reject_tools = False
        async with LLM(settings(srv, model="b"), cache) as llm:  # another model: tried natively
            res = await llm.chat(USER, tools=[RUN])
    assert res.mode == "native"
    assert cache.get(srv.base_url, "a").tools is False and cache.get(srv.base_url, "b").tools is None
    assert PROFILES.get(srv.base_url, "a").tools is None  # a private cache stays private


async def test_configured_profile_wins_over_learnt_and_known() -> None:
    cache = ProfileCache()
    with ScriptedOpenAI([tool_call("run", {"cmd": "ls"}), text("hi")]) as srv:
        cache.learn(srv.base_url, "m", tools=False, system_role=False)
        async with LLM(settings(srv, tool_mode="native", fold_system=False), cache) as llm:
            res = await llm.chat(USER, tools=[RUN])
            assert res.mode == "native" and res.tool_calls[0].name == "run"
        # The bundled gemma is known to have neither tools nor the system role ...
        async with LLM(settings(srv, model="gemma-3-270m", fold_system=False), cache) as llm:
            await llm.chat(USER)
    native, gemma = srv.chat_requests
    assert "tools" in native and native["messages"][0]["role"] == "system"
    # ... but the configuration said the system role works: it is sent as such.
    assert gemma["messages"][0]["role"] == "system"


async def test_known_small_model_gets_compat_and_folding_without_a_rejected_request() -> None:
    with ScriptedOpenAI([compat_call("run", {"cmd": "ls"})], reject_tools=True, reject_system=True) as srv:
        async with LLM(settings(srv, model="gemma-3-270m"), ProfileCache()) as llm:
            res = await llm.chat(USER, tools=[RUN])
            prof = await llm.profile()
    assert res.mode == "compat" and res.tool_calls[0].arguments == {"cmd": "ls"}
    (req,) = srv.chat_requests  # no 400 first: the seed knew
    assert "tools" not in req and [m["role"] for m in req["messages"]] == ["user"]
    assert prof.name == "gemma-3-270m" and prof.has("base_model") and prof.text_strategy == "fill_in"


async def test_rejected_parameter_is_classified_by_the_error_param_not_the_text() -> None:
    """OpenAI names the rejected parameter in the error body; the message may say anything."""
    with ScriptedOpenAI(
        [
            error(
                400,
                "This model does not take that parameter.",
                error_param="max_tokens",
                error_code="unsupported_parameter",
            ),
            text("ok"),
        ]
    ) as srv:
        async with LLM(settings(srv), ProfileCache()) as llm:
            assert (await llm.chat(USER, max_tokens=20)).content == "ok"
    first, second = srv.chat_requests
    assert first["max_tokens"] == 20 and second["max_completion_tokens"] == 20 and "max_tokens" not in second


def _bad_request(body: dict[str, Any], status: int = 400) -> openai.APIStatusError:
    import httpx

    req = httpx.Request("POST", "http://x/v1/chat/completions")
    return openai.APIStatusError("rejected", response=httpx.Response(status, request=req), body=body)


def test_rejections_are_classified_by_param_then_text() -> None:
    by_param = _bad_request({"error": {"message": "nope", "param": "tool_choice"}})
    assert rejected_features(by_param, system=True, text="nope") == [TOOLS]
    assert rejected_features(_bad_request({"error": {"param": "max_tokens"}}), system=False) == [MAX_COMPLETION_TOKENS]
    # A named parameter the client cannot do without: nothing to learn, whatever the text says.
    assert rejected_features(_bad_request({"error": {"param": "model"}}), system=True, text="system tool") == []
    # No parameter: the message (llama.cpp, Mistral templates).
    assert rejected_features(_bad_request({}), system=True, text="System role not supported") == [SYSTEM_ROLE]
    assert rejected_features(_bad_request({}), system=False, text="System role not supported") == []
    # Not a rejection of the request: never learnt from.
    assert rejected_features(_bad_request({}, status=500), system=True, text="system tools") == []


def test_seeds_and_configuration() -> None:
    assert seed_for("https://api.openai.com/v1", "gpt-4o-mini").tools is True
    o3 = seed_for("https://api.openai.com/v1", "o3-mini")
    assert o3.max_completion_tokens and "temperature" in o3.unsupported_params
    assert seed_for("http://h/v1", "models/qwen2.5-7b-q4_k_m.gguf").name == "llama.cpp"
    unknown = seed_for("http://h/v1", "m")
    assert unknown == ModelProfile() and unknown.tools is None and unknown.tool_mode() == "native"
    cfg = AgentSettings.for_endpoint(
        "http://h/v1", model="m", tool_mode="compat", context_window=2048, max_output_tokens=99
    ).smart
    prof = ProfileCache().resolve(cfg)
    assert prof.tool_mode(cfg.tool_mode) == "compat" and prof.tools is False
    assert prof.context_window == 2048 and prof.max_output_tokens == 99 and prof.system_role is None
