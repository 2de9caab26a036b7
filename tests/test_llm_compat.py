"""Compatibility mode (tools described in the prompt, calls in fenced JSON) and the "auto"
fallback from native tool calls, against the scripted server."""

from __future__ import annotations

import asyncio
from typing import Any

from agentd.llm import LLM, tool_result_message
from agentd.llm.compat import Call, Invalid, NoCall, parse_call
from agentd.settings import AgentSettings
from tests.support.scripted_openai import ScriptedOpenAI, compat_call, error, text, tool_call
from tests.test_llm_chat import RUN, USER, WRITE


def settings(srv: ScriptedOpenAI, **kw: Any) -> AgentSettings:
    return AgentSettings.for_endpoint(srv.base_url, api_key="k", model="m", backoff_s=0.01, timeout_s=5, **kw)


def test_parse_call_forms() -> None:
    tools = [WRITE, RUN]
    ok = parse_call('Sure.\n```json\n{"tool": "run", "arguments": {"cmd": "ls"}}\n```', tools)
    assert isinstance(ok, Call) and ok.call.name == "run" and ok.call.arguments == {"cmd": "ls"}
    assert ok.call.id.startswith("call_")
    # Other spellings models use: no language tag, "name"/"parameters", a bare object.
    for content in (
        '```\n{"name": "run", "parameters": {"cmd": "ls"}}\n```',
        '{"tool": "run", "arguments": {"cmd": "ls"}}',
        'I will call {"tool": "run", "arguments": {"cmd": "ls"}} now',
        '```json\n{"tool": "run", "arguments": "{\\"cmd\\": \\"ls\\"}"}\n```',
    ):
        p = parse_call(content, tools)
        assert isinstance(p, Call) and p.call.arguments == {"cmd": "ls"}, content
    # What small models get wrong and is still unambiguous: trailing commas, Python quoting.
    for content in (
        '```json\n{"tool": "run", "arguments": {"cmd": "ls",},}\n```',
        "```json\n{'tool': 'run', 'arguments': {'cmd': 'ls'}}\n```",
    ):
        p = parse_call(content, tools)
        assert isinstance(p, Call) and p.call.arguments == {"cmd": "ls"}, content
    # Plain answers, and JSON data that is not a call.
    assert isinstance(parse_call("The answer is 42.", tools), NoCall)
    assert isinstance(parse_call('```json\n{"name": "todo", "done": false}\n```', tools), NoCall)
    # Attempts that went wrong, with messages that tell the model what to fix.
    cut = parse_call('```json\n{"tool": "run", "arguments": {"cmd": "l', tools)
    assert isinstance(cut, Invalid) and "not valid JSON" in cut.error
    unknown = parse_call('```json\n{"tool": "delete_all", "arguments": {}}\n```', tools)
    assert (
        isinstance(unknown, Invalid) and "no tool named 'delete_all'" in unknown.error and "write_file" in unknown.error
    )
    bad = parse_call(
        '```json\n{"tool": "write_file", "arguments": {"path": 3, "content": "x", "mode": "w"}}\n```', tools
    )
    assert isinstance(bad, Invalid)
    assert "arguments.path must be of type string" in bad.error and "unknown property 'mode'" in bad.error


async def test_compat_mode_describes_tools_and_parses_the_fenced_call() -> None:
    with ScriptedOpenAI(
        [compat_call("write_file", {"path": "a.py", "content": "x"}, before="Writing it."), text("Done.")]
    ) as srv:
        async with LLM(settings(srv, tool_mode="compat")) as llm:
            tokens: list[str] = []
            res = await llm.chat(USER, tools=[WRITE, RUN], on_token=tokens.append)
            assert res.mode == "compat" and res.finish_reason == "tool_calls"
            assert [(c.name, c.arguments) for c in res.tool_calls] == [("write_file", {"path": "a.py", "content": "x"})]
            assert "".join(tokens) == res.content  # compat replies stream too
            history = [*USER, res.assistant_message(), tool_result_message(res.tool_calls[0], "wrote 1 byte")]
            res2 = await llm.chat(history, tools=[WRITE, RUN])
    assert res2.content == "Done." and res2.tool_calls == []
    first, second = srv.chat_requests
    assert "tools" not in first
    system = first["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are terse.")
    assert (
        "write_file: Write a file of the workspace" in system["content"]
        and '"required":["path","content"]' in system["content"]
    )
    # The history goes back as plain text: no tool role, the call not duplicated.
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert second["messages"][2]["content"].count('"tool"') == 1
    assert second["messages"][3]["content"] == "Result of tool write_file:\nwrote 1 byte"


async def test_bad_block_is_fed_back_and_retried() -> None:
    with ScriptedOpenAI(
        [
            text('```json\n{"tool": "write_file", "arguments": {"path": "a.py"}}\n```'),
            compat_call("write_file", {"path": "a.py", "content": "ok"}),
        ]
    ) as srv:
        async with LLM(settings(srv, tool_mode="compat")) as llm:
            res = await llm.chat(USER, tools=[WRITE])
    assert res.tool_calls[0].arguments == {"path": "a.py", "content": "ok"}
    retry = srv.chat_requests[1]["messages"]
    assert retry[-2]["role"] == "assistant" and '"path": "a.py"' in retry[-2]["content"]
    assert retry[-1]["role"] == "user"
    assert "missing the required property 'content'" in retry[-1]["content"]
    assert res.usage.calls == 2


async def test_retries_are_bounded_and_end_in_a_clean_result() -> None:
    bad = text('```json\n{"tool": "nope", "arguments": {}}\n```')
    with ScriptedOpenAI(responder=lambda req: bad) as srv:
        async with LLM(settings(srv, tool_mode="compat", compat_retries=2)) as llm:
            res = await asyncio.wait_for(llm.chat(USER, tools=[WRITE]), 10)
    assert len(srv.chat_requests) == 3
    assert res.tool_calls == [] and res.finish_reason == "invalid_tool_call"
    assert "no tool named 'nope'" in res.tool_error
    assert res.usage.calls == 3


async def test_auto_falls_back_to_compat_when_the_server_rejects_tools() -> None:
    with ScriptedOpenAI([compat_call("run", {"cmd": "ls"}), text("bye")], reject_tools=True) as srv:
        async with LLM(settings(srv)) as llm:
            res = await llm.chat(USER, tools=[RUN])
            assert res.mode == "compat" and res.tool_calls[0].arguments == {"cmd": "ls"}
            res2 = await llm.chat(USER, tools=[RUN])
    assert res2.content == "bye" and res2.mode == "compat"
    reqs = srv.chat_requests
    assert len(reqs) == 3  # rejected, compat, compat straight away (remembered)
    assert "tools" in reqs[0] and "tools" not in reqs[1] and "tools" not in reqs[2]


async def test_native_mode_does_not_fall_back() -> None:
    from agentd.errors import LLMError

    with ScriptedOpenAI([], reject_tools=True) as srv:
        async with LLM(settings(srv, tool_mode="native")) as llm:
            try:
                await llm.chat(USER, tools=[RUN])
            except LLMError as exc:
                assert "400" in str(exc) and "tools" in str(exc)
            else:
                raise AssertionError("expected LLMError")


async def test_auto_accepts_a_fenced_call_from_a_native_request() -> None:
    with ScriptedOpenAI(
        [
            text('```json\n{"tool": "run", "arguments": {}}\n```'),  # schema violation: cmd missing
            compat_call("run", {"cmd": "pytest -q"}),
        ]
    ) as srv:
        async with LLM(settings(srv)) as llm:
            res = await llm.chat(USER, tools=[RUN])
    assert res.mode == "compat" and res.tool_calls[0].arguments == {"cmd": "pytest -q"}
    first, second = srv.chat_requests
    assert "tools" in first and "tools" not in second
    assert "missing the required property 'cmd'" in second["messages"][-1]["content"]


async def test_auto_native_still_used_when_supported() -> None:
    with ScriptedOpenAI([tool_call("run", {"cmd": "ls"}), error(400, "bad")]) as srv:
        async with LLM(settings(srv)) as llm:
            res = await llm.chat(USER, tools=[RUN])
    assert res.mode == "native" and res.tool_calls[0].name == "run"
