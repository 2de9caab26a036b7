"""LLM.chat against the scripted OpenAI-compatible server: streaming, native tool calls,
usage and cost, retries and the errors a user sees."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from agentd.errors import LLMError
from agentd.llm import LLM, ToolSpec, tool_result_message
from agentd.llm.pricing import cost_usd
from agentd.settings import AgentSettings
from tests.support.scripted_openai import (
    ScriptedOpenAI,
    disconnect,
    error,
    hang,
    text,
    tool_call,
    tool_calls,
)

WRITE = ToolSpec(
    "write_file",
    "Write a file of the workspace",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)
RUN = ToolSpec(
    "run", "Run a command", {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
)
USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]


def settings(srv: ScriptedOpenAI, **kw: Any) -> AgentSettings:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5)
    return AgentSettings.for_endpoint(srv.base_url, api_key=kw.pop("api_key", "sk-test"), **kw)


async def test_streamed_tokens_arrive_in_order_and_as_they_come() -> None:
    reply = "The quick brown fox jumps over the lazy dog."
    with ScriptedOpenAI([text(reply, chunk_delay_s=0.05)]) as srv:
        async with LLM(settings(srv)) as llm:
            seen: list[tuple[float, str]] = []
            res = await asyncio.wait_for(llm.chat(USER, on_token=lambda t: seen.append((time.monotonic(), t))), 10)
    tokens = [t for _, t in seen]
    assert tokens == ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog."]
    assert "".join(tokens) == res.content == reply
    # Streamed, not buffered: the first token came long before the last one.
    assert seen[-1][0] - seen[0][0] >= 0.25
    assert res.finish_reason == "stop" and res.tool_calls == [] and res.mode == "native"
    req = srv.chat_requests[0]
    assert req["stream"] is True and req["stream_options"] == {"include_usage": True}
    assert req["model"] == "scripted-model"  # asked from /v1/models: no model configured
    assert req["messages"] == USER


async def test_native_tool_calls_are_parsed_and_round_trip() -> None:
    with ScriptedOpenAI(
        [
            tool_calls(
                ("write_file", {"path": "app.py", "content": "print('hi')\n"}),
                ("run", {"cmd": "python app.py"}),
                content="Writing and running.",
            ),
            text("It printed hi."),
        ]
    ) as srv:
        async with LLM(settings(srv, model="m")) as llm:
            res = await llm.chat(USER, tools=[WRITE, RUN])
            assert res.mode == "native" and res.finish_reason == "tool_calls"
            assert [(c.name, c.arguments) for c in res.tool_calls] == [
                ("write_file", {"path": "app.py", "content": "print('hi')\n"}),
                ("run", {"cmd": "python app.py"}),
            ]
            assert res.content == "Writing and running."
            history = [*USER, res.assistant_message(), *(tool_result_message(c, "ok") for c in res.tool_calls)]
            res2 = await llm.chat(history, tools=[WRITE, RUN])
    assert res2.content == "It printed hi."
    first, second = srv.chat_requests
    assert [t["function"]["name"] for t in first["tools"]] == ["write_file", "run"]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["path", "content"]
    ids = [c.id for c in res.tool_calls]
    assert [m.get("tool_call_id") for m in second["messages"][-2:]] == ids
    assert [c["id"] for c in second["messages"][2]["tool_calls"]] == ids


async def test_malformed_native_arguments_are_fed_back_and_retried() -> None:
    with ScriptedOpenAI(
        [
            tool_call("write_file", '{"path": "a.py", "content": ', id="call_bad"),  # cut-off JSON
            tool_call("write_file", {"path": "a.py"}),  # schema: content missing
            tool_call("write_file", {"path": "a.py", "content": "x = 1\n"}),
        ]
    ) as srv:
        async with LLM(settings(srv, model="m")) as llm:
            res = await llm.chat(USER, tools=[WRITE])
    assert [(c.name, c.arguments) for c in res.tool_calls] == [("write_file", {"path": "a.py", "content": "x = 1\n"})]
    assert len(srv.chat_requests) == 3
    fb1 = srv.chat_requests[1]["messages"][-1]
    assert fb1["role"] == "tool" and fb1["tool_call_id"] == "call_bad" and "not valid JSON" in fb1["content"]
    fb2 = srv.chat_requests[2]["messages"][-1]
    assert "missing the required property 'content'" in fb2["content"]
    assert res.usage.calls == 3


async def test_usage_and_cost_are_summed_per_call_and_per_instance() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 200}
    with ScriptedOpenAI(
        [text("a", usage=usage), text("b", usage=usage), text("c", report_usage=False)], models=["gpt-4o-mini"]
    ) as srv:
        async with LLM(settings(srv, model="gpt-4o-mini")) as llm:
            r1 = await llm.chat(USER)
            r2 = await llm.chat(USER)
            assert r1.usage.prompt_tokens == 1000 and r1.usage.completion_tokens == 200 and r1.usage.calls == 1
            assert r1.usage.cost_usd == pytest.approx(1000 * 0.15e-6 + 200 * 0.60e-6)
            assert llm.usage.prompt_tokens == 2000 and llm.usage.calls == 2
            assert llm.usage.cost_usd == pytest.approx(r1.usage.cost_usd + r2.usage.cost_usd)
            # A server that reports no usage: counted by the client, never zero.
            r3 = await llm.chat(USER)
            assert r3.usage.prompt_tokens > 0 and r3.usage.completion_tokens > 0
            assert llm.usage.calls == 3


def test_price_table() -> None:
    assert cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert cost_usd("gpt-4o-mini", 0, 1_000_000) == pytest.approx(0.6)  # longest prefix wins over gpt-4o
    assert cost_usd("gpt-4o-mini-2024-07-18", 0, 1_000_000) == pytest.approx(0.6)
    assert cost_usd("gemma-3-270m-q4_k_m.gguf", 10**6, 10**6) == 0.0
    assert cost_usd("llama-3-8b", 10**6, 10**6) == 0.0


async def test_429_then_success_is_retried() -> None:
    with ScriptedOpenAI(
        [error(429, "Rate limit reached", headers={"Retry-After": "0"}), disconnect(), text("finally")]
    ) as srv:
        async with LLM(settings(srv, model="m")) as llm:
            res = await asyncio.wait_for(llm.chat(USER), 10)
    assert res.content == "finally"
    assert len(srv.chat_requests) == 3


async def test_500_forever_fails_fast_with_a_clear_error() -> None:
    with ScriptedOpenAI(responder=lambda req: error(500, "model crashed")) as srv:
        async with LLM(settings(srv, model="m", max_retries=2)) as llm:
            t0 = time.monotonic()
            with pytest.raises(LLMError) as ei:
                await asyncio.wait_for(llm.chat(USER), 10)
            elapsed = time.monotonic() - t0
    msg = str(ei.value)
    assert srv.base_url in msg and "500" in msg and "model crashed" in msg and "after 2 retries" in msg
    assert len(srv.chat_requests) == 3
    assert elapsed < 3


async def test_400_is_not_retried() -> None:
    with ScriptedOpenAI([error(400, "max_tokens is too large")]) as srv:
        async with LLM(settings(srv, model="m")) as llm:
            with pytest.raises(LLMError, match="rejected the request \\(400\\): max_tokens is too large"):
                await llm.chat(USER)
    assert len(srv.chat_requests) == 1


async def test_parameters_a_model_rejects_are_adapted() -> None:
    with ScriptedOpenAI(
        [
            error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            ),
            error(400, "Unsupported value: 'temperature' does not support 0.2 with this model."),
            text("ok"),
            text("again"),
        ]
    ) as srv:
        async with LLM(settings(srv, model="m")) as llm:
            assert (await llm.chat(USER, max_tokens=50, temperature=0.2)).content == "ok"
            assert (await llm.chat(USER, max_tokens=50, temperature=0.2)).content == "again"
    reqs = srv.chat_requests
    assert reqs[0]["max_tokens"] == 50 and reqs[0]["temperature"] == 0.2
    assert reqs[1]["max_completion_tokens"] == 50 and "max_tokens" not in reqs[1]
    for r in reqs[2:]:  # remembered
        assert r["max_completion_tokens"] == 50 and "temperature" not in r and "max_tokens" not in r


async def test_connection_refused_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    cfg = AgentSettings.for_endpoint(url, api_key="k", model="m", backoff_s=0.01, max_retries=1)
    async with LLM(cfg) as llm:
        t0 = time.monotonic()
        with pytest.raises(LLMError) as ei:
            await asyncio.wait_for(llm.chat(USER), 10)
    assert url in str(ei.value) and "connection refused" in str(ei.value)
    assert time.monotonic() - t0 < 5


async def test_wrong_key_says_the_key_was_rejected() -> None:
    with ScriptedOpenAI([text("never")], api_key="right-key") as srv:
        for model in ("m", ""):  # chat request, and the /v1/models lookup of an unnamed model
            async with LLM(settings(srv, api_key="wrong-key", model=model)) as llm:
                with pytest.raises(LLMError) as ei:
                    await asyncio.wait_for(llm.chat(USER), 10)
            assert "rejected the API key (401" in str(ei.value) and srv.base_url in str(ei.value)
            assert "wrong-key" not in str(ei.value)
        assert srv.remaining == 1  # never answered
        assert len(srv.chat_requests) == 1  # 401 is not retried


async def test_timeout_is_an_error_not_a_hang() -> None:
    with ScriptedOpenAI([hang(30)]) as srv:
        async with LLM(settings(srv, model="m", timeout_s=0.5, max_retries=0)) as llm:
            t0 = time.monotonic()
            with pytest.raises(LLMError, match="timeout"):
                await asyncio.wait_for(llm.chat(USER), 10)
    assert time.monotonic() - t0 < 3


async def test_a_silent_server_is_tried_twice_not_max_retries_times() -> None:
    with ScriptedOpenAI(responder=lambda req: hang(30)) as srv:
        async with LLM(settings(srv, model="m", timeout_s=0.3, max_retries=5)) as llm:
            t0 = time.monotonic()
            with pytest.raises(LLMError, match=r"did not answer within 0.3s \(timeout\)"):
                await asyncio.wait_for(llm.chat(USER), 10)
    assert len(srv.chat_requests) == 2
    assert time.monotonic() - t0 < 3


async def test_smart_and_fast_models_on_two_servers() -> None:
    with (
        ScriptedOpenAI([text("smart answer")], models=["big"]) as a,
        ScriptedOpenAI([text("fast answer")], models=["small"]) as b,
    ):
        cfg = AgentSettings.from_env(
            "backend",
            {
                "OPENAI_BASE_URL": a.base_url,
                "ORCHGPT_FAST_BASE_URL": b.base_url,
                "OPENAI_API_KEY": "k",
            },
        )
        async with LLM(cfg) as llm:
            assert (await llm.chat(USER, model="fast")).content == "fast answer"
            assert (await llm.chat(USER)).content == "smart answer"
    assert a.chat_requests[0]["model"] == "big" and b.chat_requests[0]["model"] == "small"
