"""One request to a model server: streamed, retried with backoff, its usage counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from orchgpt import logs, tracing
from orchgpt.models import Usage

from .. import telemetry
from . import compat
from .endpoint import Endpoint, Raw
from .failures import retryable, short, total_timeout
from .pricing import cost_usd
from .profiles import ModelProfile

log = logs.get("agentd.llm")

OnToken = Callable[[str], None]


async def with_retries(
    ep: Endpoint,
    prof: ModelProfile,
    msgs: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    on_token: OnToken | None,
    opts: dict[str, Any],
    usage: Usage,
    total: Usage,
) -> Raw:
    """One streamed completion, retried on 429, 5xx and connection errors (with backoff)."""
    s = ep.settings

    def wait(state: RetryCallState) -> float:
        delay = min(s.backoff_s * 2.0 ** (state.attempt_number - 1), s.max_backoff_s)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            after = exc.response.headers.get("retry-after")
            try:
                delay = max(delay, min(float(after), s.max_backoff_s)) if after else delay
            except ValueError:
                pass
        log.warning(
            "llm_retry",
            url=ep.url,
            model=ep.model,
            attempt=state.attempt_number,
            wait_s=round(delay, 3),
            error=short(exc),
        )
        return delay

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= s.max_retries + 1:
            return True
        # A server that accepts but does not answer is tried twice, not max_retries times:
        # each try already waited timeout_s.
        exc = state.outcome.exception() if state.outcome else None
        return isinstance(exc, openai.APITimeoutError) and state.attempt_number >= 2

    retrying = AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception(retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with asyncio.timeout(total_timeout(s)):
                if tracing.ENABLED:  # a `chat {model}` span (agentd/telemetry.py)
                    return await telemetry.chat(stream_reply, ep, prof, msgs, tools, on_token, opts, usage, total)
                return await stream_reply(ep, prof, msgs, tools, on_token, opts, usage, total)
    raise AssertionError("unreachable")


async def stream_reply(
    ep: Endpoint,
    prof: ModelProfile,
    msgs: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    on_token: OnToken | None,
    opts: dict[str, Any],
    usage: Usage,
    total: Usage,
) -> Raw:
    """One completion, streamed: tokens to ``on_token``; its usage added to ``usage`` and ``total``."""
    kwargs: dict[str, Any] = {"model": ep.model, "messages": msgs, "stream": True}
    if prof.stream_usage:
        kwargs["stream_options"] = {"include_usage": True}
    if tools:
        kwargs["tools"] = tools
    kwargs.update((k, v) for k, v in opts.items() if k not in prof.unsupported_params)
    if prof.max_completion_tokens and "max_tokens" in kwargs:
        kwargs["max_completion_tokens"] = kwargs.pop("max_tokens")
    stream = await ep.client.chat.completions.create(**kwargs)
    parts: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = ""
    reported: Any = None
    async with stream:
        async for chunk in stream:
            if getattr(chunk, "usage", None):
                reported = chunk.usage
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is not None and delta.content:
                    parts.append(delta.content)
                    if on_token is not None:
                        on_token(delta.content)
                for tc in (delta.tool_calls or []) if delta is not None else []:
                    slot = calls.setdefault(tc.index or 0, {"id": "", "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
                if choice.finish_reason:
                    finish = choice.finish_reason
    content = "".join(parts)
    tool_calls = [calls[i] for i in sorted(calls)]
    for c in tool_calls:
        c["id"] = c["id"] or compat.new_call_id()
    if reported is not None and (reported.prompt_tokens or reported.completion_tokens):
        p, c_ = int(reported.prompt_tokens or 0), int(reported.completion_tokens or 0)
    else:  # the server reports no usage: count it ourselves
        p = ep.counter.messages(msgs, ep.model)
        c_ = ep.counter.text(content + "".join(c["name"] + c["arguments"] for c in tool_calls), ep.model)
    call_usage = Usage(
        prompt_tokens=p, completion_tokens=c_, cost_usd=cost_usd(ep.model, p, c_), model=ep.model, calls=1
    )
    usage.add(call_usage)
    total.add(call_usage)
    telemetry.count_llm(p, c_)  # reported in the heartbeats
    log.debug(
        "llm_call",
        url=ep.url,
        model=ep.model,
        prompt_tokens=p,
        completion_tokens=c_,
        finish=finish,
        tool_calls=len(tool_calls),
    )
    return Raw(content, tool_calls, finish or ("tool_calls" if tool_calls else "stop"))
