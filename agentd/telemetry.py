"""The agent's spans, in the OpenTelemetry GenAI semantic conventions (docs/operations.md).

    invoke_agent {type}      a task run on this agent; parent: the daemon's run span, named by
                             the RUN envelope's traceparent
      chat {model}           each model request (one per HTTP attempt), with the model, the
                             server, the token usage and the finish reason
      execute_tool {tool}    each tool call

Prompt and completion text is recorded only when the user opts in
(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true), never by default. Every helper is a
no-op while tracing is off (orchgpt.tracing.ENABLED is False).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from orchgpt import tracing
from orchgpt.models import Task, TaskResult, TaskState, Usage

T = TypeVar("T")
# this process's counters since it started, reported in each HEARTBEAT (Heartbeat fields 10-14):
# model requests, input tokens, output tokens, tool calls, failed tool calls
COUNTS = [0, 0, 0, 0, 0]
PROVIDER = "openai"  # the OpenAI-compatible API every endpoint speaks
MAX_CONTENT = 16_384  # characters of captured content per attribute (when opted in)
_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
}


async def invoke_agent(
    run: Awaitable[T],
    task: Task,
    agent_type: str,
    agent_name: str,
    traceparent: str,
    tracestate: str,
) -> T:
    """Await ``run`` (a task's run) inside an ``invoke_agent`` span under the RUN's context."""
    from opentelemetry import trace

    ctx = tracing.context_from(traceparent, tracestate) if traceparent else None
    attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent_type,
        "gen_ai.agent.id": agent_name,
        "gen_ai.conversation.id": task.session_id,
        "orchgpt.task.id": task.task_id,
    }
    with tracing.tracer().start_as_current_span(
        f"invoke_agent {agent_type}", context=ctx, kind=trace.SpanKind.SERVER, attributes=attrs
    ):
        return await run


def task_done(result: TaskResult) -> None:
    """The task's outcome on the current ``invoke_agent`` span."""
    if not tracing.ENABLED:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    span.set_attribute("orchgpt.task.state", str(result.state))
    _usage(span, result.usage)
    if result.state != TaskState.SUCCEEDED:
        span.set_attribute("error.type", str(result.state))
        span.set_status(Status(StatusCode.ERROR, (result.error or str(result.state))[:200]))


def _usage(span: Any, u: Usage) -> None:
    if u.prompt_tokens or u.completion_tokens:
        span.set_attribute("gen_ai.usage.input_tokens", u.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", u.completion_tokens)


async def chat(
    call: Callable[..., Awaitable[T]],
    ep: Any,
    prof: Any,
    msgs: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    on_token: Any,
    opts: dict[str, Any],
    usage: Usage,
    total: Usage,
) -> T:
    """``call(...)`` (llm.streaming.stream_reply), one model request, in a ``chat {model}``
    span; ``usage`` grows by this request's usage (read as the difference)."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": ep.model,
    }
    url = urlsplit(ep.url)
    if url.hostname:
        attrs["server.address"] = url.hostname
        attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    for k, name in _REQUEST_PARAMS.items():
        v = opts.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            attrs[name] = v
    if tracing.CAPTURE_CONTENT:
        attrs["gen_ai.input.messages"] = _capped(msgs)
        if tools:
            attrs["gen_ai.tool.definitions"] = _capped(tools)
    p0, c0 = usage.prompt_tokens, usage.completion_tokens
    with tracing.tracer().start_as_current_span(
        f"chat {ep.model}", kind=trace.SpanKind.CLIENT, attributes=attrs, record_exception=False
    ) as span:
        try:
            raw = await call(ep, prof, msgs, tools, on_token, opts, usage, total)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise
        span.set_attribute("gen_ai.response.model", ep.model)
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens - p0)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens - c0)
        r: Any = raw  # an endpoint.Raw
        span.set_attribute("gen_ai.response.finish_reasons", [r.finish_reason or "stop"])
        if tracing.CAPTURE_CONTENT:
            out = {"role": "assistant", "content": r.content, "tool_calls": r.tool_calls}
            span.set_attribute("gen_ai.output.messages", _capped([out]))
        return raw


@contextlib.contextmanager
def _tool(name: str, call_id: str) -> Iterator[Any]:
    from opentelemetry import trace

    attrs = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": "function",
    }
    if call_id:
        attrs["gen_ai.tool.call.id"] = call_id
    with tracing.tracer().start_as_current_span(
        f"execute_tool {name}", kind=trace.SpanKind.INTERNAL, attributes=attrs
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            raise


def tool(name: str, call_id: str = "") -> contextlib.AbstractContextManager[Any]:
    """An ``execute_tool`` span around a tool call (a no-op while tracing is off)."""
    if not tracing.ENABLED:
        return contextlib.nullcontext()
    return _tool(name, call_id)


def _capped(obj: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "…"


def count_llm(input_tokens: int, output_tokens: int) -> None:
    c = COUNTS
    c[0] += 1
    c[1] += input_tokens
    c[2] += output_tokens


def count_tool(ok: bool) -> None:
    COUNTS[3] += 1
    if not ok:
        COUNTS[4] += 1


# ---------------------------------------------------------------- the link's hooks (agentd/link.py)
def run(link: Any, req: Task, env: Any) -> Coroutine[Any, Any, None]:
    """``link._run_task`` for the RUN envelope ``env``: inside an ``invoke_agent`` span under the
    daemon's run span (the envelope's traceparent) when tracing is on."""
    coro: Coroutine[Any, Any, None] = link._run_task(req, env.id)
    if not tracing.ENABLED:
        return coro
    return invoke_agent(coro, req, link.agent.type, link.name, env.traceparent, env.tracestate)


_NO_FIELDS: dict[str, str] = {}


def trace_fields() -> dict[str, str]:
    """The current span's trace context as envelope fields (empty when off or outside a span):
    a DELEGATE_TASK's sub-task and a COMMAND's answer go under the sender's span."""
    if not tracing.ENABLED:
        return _NO_FIELDS
    tp, ts = tracing.current_carrier()
    if not tp:
        return _NO_FIELDS
    return {"traceparent": tp, "tracestate": ts} if ts else {"traceparent": tp}


def answering(
    sender: str, traceparent: str, tracestate: str
) -> contextlib.AbstractContextManager[Any]:
    """An ``orchgpt.command`` span around answering another agent's COMMAND, under its span."""
    return tracing.span(
        "orchgpt.command", (traceparent, tracestate), "SERVER", **{"orchgpt.command.sender": sender}
    )


def heartbeat_counts() -> dict[str, int]:
    """This process's counters as Heartbeat fields (10-14)."""
    c = COUNTS
    return {
        "llm_calls": c[0],
        "llm_input_tokens": c[1],
        "llm_output_tokens": c[2],
        "tool_calls": c[3],
        "tool_errors": c[4],
    }
