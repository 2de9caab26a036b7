"""Role folding, token counting (/tokenize) and fitting histories into the context window."""

from __future__ import annotations

from typing import Any

from agentd.llm import LLM
from agentd.llm.roles import fold_system
from agentd.llm.tokens import TokenCounter, root_url
from agentd.settings import AgentSettings
from tests.support.scripted_openai import ScriptedOpenAI, count_tokens, text
from tests.test_llm_chat import USER


def settings(srv: ScriptedOpenAI, **kw: Any) -> AgentSettings:
    return AgentSettings.for_endpoint(srv.base_url, api_key="k", model="m", backoff_s=0.01, timeout_s=5, **kw)


def test_fold_system_merges_roles() -> None:
    folded = fold_system(
        [
            {"role": "system", "content": "Rules."},
            {"role": "user", "content": "Task."},
            {"role": "user", "content": "More."},
            {"role": "assistant", "content": "A"},
            {"role": "system", "content": "Late rule."},
            {"role": "assistant", "content": "B"},
        ]
    )
    assert folded == [
        {"role": "user", "content": "Rules.\n\nLate rule.\n\nTask.\n\nMore."},
        {"role": "assistant", "content": "A\n\nB"},
    ]


async def test_system_role_rejected_then_folded_and_remembered() -> None:
    with ScriptedOpenAI([text("one"), text("two")], reject_system=True) as srv:
        async with LLM(settings(srv)) as llm:
            assert (await llm.chat(USER)).content == "one"
            assert (await llm.chat(USER)).content == "two"
    reqs = srv.chat_requests
    assert len(reqs) == 3  # rejected, folded; then folded straight away
    assert reqs[0]["messages"][0]["role"] == "system"
    for r in reqs[1:]:
        assert r["messages"] == [{"role": "user", "content": "You are terse.\n\nSay hello."}]


async def test_fold_when_configured() -> None:
    with ScriptedOpenAI([text("one")]) as srv:
        async with LLM(settings(srv, fold_system=True)) as llm:
            await llm.chat(USER)
    assert [m["role"] for m in srv.chat_requests[0]["messages"]] == ["user"]


async def test_tokenize_endpoint_is_used_and_cached() -> None:
    msgs = [{"role": "user", "content": "alpha, beta; gamma delta"}]
    with ScriptedOpenAI() as srv:
        async with LLM(settings(srv)) as llm:
            n = await llm.count_tokens_exact(msgs)
            assert n == 3 + 4 + count_tokens("user\nalpha, beta; gamma delta")
            assert srv.tokenize_requests == [{"content": "user\nalpha, beta; gamma delta"}]
            assert await llm.count_tokens_exact(msgs) == n  # cached per text
            assert llm.count_tokens(msgs) == n  # the sync count sees the cached exact count
            assert len(srv.tokenize_requests) == 1


async def test_no_tokenize_endpoint_is_probed_once_then_estimated() -> None:
    with ScriptedOpenAI(tokenize=False) as srv:
        async with LLM(settings(srv)) as llm:
            a = await llm.count_tokens_exact([{"role": "user", "content": "x" * 350}])
            b = await llm.count_tokens_exact([{"role": "user", "content": "y" * 700}])
    assert 100 <= a <= 120 and 200 <= b <= 220  # ~3.5 characters a token
    probes = [r.path for r in srv.requests if "tokenize" in r.path]
    assert probes == ["/tokenize", "/extras/tokenize/count"]


def test_root_url() -> None:
    assert root_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080"
    assert root_url("http://h/v1/") == "http://h"
    assert TokenCounter("http://h/v1", None).text("", "m") == 0


def _history(n: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You build services."},
        {"role": "user", "content": "Build a todo API."},
    ]
    for i in range(n):
        msgs.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": f"c{i}", "type": "function", "function": {"name": "run", "arguments": '{"cmd": "pytest"}'}}
                ],
            }
        )
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"step {i} " + "output " * 40})
    msgs.append({"role": "user", "content": "Now fix the failing test."})
    return msgs


async def test_fit_trims_old_exchanges_to_the_window() -> None:
    with ScriptedOpenAI() as srv:
        async with LLM(settings(srv, context_window=800)) as llm:
            long = _history(20)
            assert await llm.count_tokens_exact(long) > 800
            fitted = await llm.fit(long, reserve=200)
            assert await llm.count_tokens_exact(fitted) <= 600
            short = _history(1)
            assert await llm.fit(short, reserve=200) == short  # fits: untouched
    assert fitted[:2] == long[:2]  # system and task kept
    assert fitted[-1] == long[-1]  # the latest message kept
    assert "earlier messages were omitted" in fitted[2]["content"]
    # Tool results never lose their call.
    ids = {tc["id"] for m in fitted for tc in m.get("tool_calls", [])}
    assert all(m["tool_call_id"] in ids for m in fitted if m["role"] == "tool")
    assert any(m["role"] == "tool" for m in fitted)
    assert srv.tokenize_requests  # counted by the server's tokenizer


async def test_fit_cuts_a_huge_message() -> None:
    with ScriptedOpenAI() as srv:
        async with LLM(settings(srv, context_window=1000)) as llm:
            msgs = [{"role": "user", "content": "word " * 3000}]
            fitted = await llm.fit(msgs, reserve=200)
            assert await llm.count_tokens_exact(fitted) <= 800
    assert "characters cut to fit the context window" in fitted[0]["content"]


async def test_fit_can_summarise_with_the_fast_model() -> None:
    with ScriptedOpenAI([text("Ran pytest 20 times; test_delete fails.")]) as srv:
        async with LLM(settings(srv, context_window=800)) as llm:
            fitted = await llm.fit(_history(20), reserve=200, summarise=True)
            assert await llm.count_tokens_exact(fitted) <= 600
            assert llm.usage.calls == 1  # the summary's usage is counted
    assert "Ran pytest 20 times; test_delete fails." in fitted[2]["content"]
    summary_request = srv.chat_requests[0]["messages"]
    assert "output output" in summary_request[-1]["content"]
    # The transcript to summarise was itself cut to fit the fast model's window.
    assert sum(count_tokens(m["content"]) for m in summary_request) < 800
