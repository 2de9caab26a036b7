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
E = TypeVar("E")
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
    outcome: Callable[[], TaskResult | None] | None = None,
) -> T:
    """Await ``run`` (a task's run) inside an ``invoke_agent`` span under the RUN's context;
    ``outcome()`` then gives the task's result (or None), recorded on the span."""
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
    ) as span:
        out = await run
        result = outcome() if outcome is not None else None
        if result is not None:
            _outcome(span, result)
        return out


def _outcome(span: Any, result: TaskResult) -> None:
    """The task's outcome on its ``invoke_agent`` span."""
    from opentelemetry.trace import Status, StatusCode

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

    def outcome() -> TaskResult | None:  # the result the run left: sent, or kept to send later
        sent: TaskResult | None = link.unconfirmed.get(req.task_id)
        kept = (r for r in reversed(link.pending_results) if r.task_id == req.task_id)
        return sent or next(kept, None)

    return invoke_agent(coro, req, link.agent.type, link.name, env.traceparent, env.tracestate, outcome)


def answer(link: Any, env: Any) -> Coroutine[Any, Any, None]:
    """``link._answer(env)``, another agent's COMMAND answered: inside an ``orchgpt.command``
    span under the asker's span (the envelope's traceparent) when tracing is on."""
    coro: Coroutine[Any, Any, None] = link._answer(env)
    if not tracing.ENABLED:
        return coro
    return _answering(coro, env.sender, env.traceparent, env.tracestate)


async def _answering(coro: Awaitable[None], sender: str, traceparent: str, tracestate: str) -> None:
    attrs = {"orchgpt.command.sender": sender}
    with tracing.span("orchgpt.command", (traceparent, tracestate), "SERVER", **attrs):
        await coro


def stamp(env: E) -> E:
    """An envelope the agent made, completed: the current span's trace context (while tracing
    is on: a DELEGATE_TASK's sub-task and a COMMAND's answer go under it), and on a HEARTBEAT
    this process's counters (Heartbeat fields 10-14)."""
    e: Any = env  # an iac_pb2.Envelope (protobuf stays in the transport modules)
    if tracing.ENABLED:
        tp, ts = tracing.current_carrier()
        if tp:
            e.traceparent, e.tracestate = tp, ts
    if e.WhichOneof("body") == "heartbeat":
        hb, c = e.heartbeat, COUNTS
        hb.llm_calls, hb.llm_input_tokens, hb.llm_output_tokens = c[0], c[1], c[2]
        hb.tool_calls, hb.tool_errors = c[3], c[4]
    return env
