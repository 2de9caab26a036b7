"""`LLM`: one client for the agent's "smart" and "fast" models over `openai.AsyncOpenAI`.

    llm = LLM(AgentSettings.from_env("backend"))
    res = await llm.chat(messages, tools=[ToolSpec(...)], on_token=ctx.token)
    ctx.add_usage(res.usage)
    history += [res.assistant_message(), *(tool_result_message(c, run(c)) for c in res.tool_calls)]
    history = await llm.fit(history)

Every request streams (tokens reach ``on_token`` as they arrive). What the
model and its server can do is a `profiles.ModelProfile` (configured, known, or
learnt from the first request the server rejects, then cached per server and
model for the whole process). Tools go native, or in compatibility mode as text
(see `compat`), or "auto": native unless the profile says the model has none
(learnt when the server rejects ``tools``). A model without the system role gets
the system text folded into the user message.
429, 5xx and connection errors are retried with exponential backoff
(tenacity); whatever still fails raises `agentd.errors.LLMError` naming the
server and the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai

from orchgpt import logs
from orchgpt.errors import ErrorCode
from orchgpt.models import Usage

from ..errors import AgentdError, LLMError
from ..settings import AgentSettings, ModelSettings
from . import compat
from . import rejection as rj
from .endpoint import Endpoint, Raw
from .failures import describe, error_text, total_timeout
from .profiles import PROFILES, ModelProfile, ProfileCache
from .roles import fold_system
from .streaming import OnToken, with_retries
from .tokens import TokenCounter
from .tool_calls import check_native, per_call_errors
from .types import ChatResult, ToolSpec

log = logs.get("agentd.llm")

NO_KEY = "sk-no-key-required"  # llama.cpp & co. accept any key; the client insists on one


class _ToolsRejected(AgentdError):
    """The server answered 400 to a request with ``tools``."""

    code = ErrorCode.INVALID_ARGUMENT


class LLM:
    """The model layer of one agent; see the module doc."""

    def __init__(self, settings: AgentSettings, profiles: ProfileCache | None = None) -> None:
        self.settings = settings
        self.profiles = PROFILES if profiles is None else profiles
        self.usage = Usage()  # every call of this instance, summaries of `fit` included
        self._endpoints: dict[str, Endpoint] = {}
        self._counters: dict[str, TokenCounter] = {}
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ public
    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[ToolSpec] | None = None,
        model: str = "smart",
        on_token: OnToken | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResult:
        ep = await self._ready(model)
        if max_tokens is None:
            max_tokens = ep.profile.max_output_tokens
        opts = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None}
        usage = Usage(model=ep.model)
        tools = list(tools or [])
        if not tools:
            raw = await self._complete(ep, messages, None, on_token, opts, usage)
            return ChatResult(raw.content, [], usage, raw.finish_reason, "native")
        if ep.effective_tool_mode() == "native":
            try:
                return await self._chat_native(ep, messages, tools, on_token, opts, usage)
            except _ToolsRejected as exc:
                ep.learn(tools=False)
                log.info("tools_rejected_using_compat", url=ep.url, model=ep.model, reason=str(exc)[:200])
        return await self._chat_compat(ep, compat.to_compat(messages, tools), tools, on_token, opts, usage)

    async def profile(self, model: str = "smart") -> ModelProfile:
        """What the model can do, as far as is known (see `profiles`)."""
        return (await self._ready(model)).profile

    def count_tokens(self, messages: list[dict[str, Any]], model: str = "smart") -> int:
        """Tokens of a prompt (synchronous: tiktoken, cached server counts, or a calibrated estimate)."""
        ep = self._endpoint(model)
        return ep.counter.messages(messages, ep.model or ep.settings.model)

    async def count_tokens_exact(self, messages: list[dict[str, Any]], model: str = "smart") -> int:
        """Tokens of a prompt, asking the server's /tokenize when it has one."""
        ep = await self._ready(model)
        return await ep.counter.messages_exact(messages, ep.model, self._client())

    async def fit(
        self, messages: list[dict[str, Any]], model: str = "smart", reserve: int = 1024, *, summarise: bool = False
    ) -> list[dict[str, Any]]:
        """The history cut to fit the model's context window, leaving ``reserve`` tokens for the reply.

        Leading system messages and the first user message (the task) stay;
        the oldest exchanges after it are dropped (an assistant tool call with
        its results as one unit) and replaced by a note, or by a summary from
        the fast model when ``summarise``; a message still too long is cut in
        the middle.
        """
        from .fitting import fit_messages

        ep = await self._ready(model)
        window = ep.profile.context_window or ep.settings.context_window
        budget = max(window - reserve, window // 4)

        async def count(ms: list[dict[str, Any]]) -> int:
            return await ep.counter.messages_exact(ms, ep.model, self._client())

        summariser = self._summarise if summarise else None
        return await fit_messages(messages, budget, count, ep.counter.chars_per_token, summariser)

    async def aclose(self) -> None:
        for ep in self._endpoints.values():
            await ep.client.close()
        self._endpoints.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ modes
    async def _chat_native(
        self,
        ep: Endpoint,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        on_token: OnToken | None,
        opts: dict[str, Any],
        usage: Usage,
    ) -> ChatResult:
        msgs = list(messages)
        specs = [t.openai() for t in tools]
        retries = ep.settings.compat_retries
        for attempt in range(retries + 1):
            raw = await self._complete(ep, msgs, specs, on_token, opts, usage)
            if not raw.tool_calls:
                if ep.settings.tool_mode == "auto":  # the model may answer with a fenced call anyway
                    parsed = compat.parse_call(raw.content, tools)
                    if isinstance(parsed, compat.Call):
                        return ChatResult(raw.content, [parsed.call], usage, "tool_calls", "compat")
                    if isinstance(parsed, compat.Invalid):
                        history = [
                            *compat.to_compat(msgs, tools),
                            {"role": "assistant", "content": raw.content},
                            compat.feedback(parsed.error),
                        ]
                        log.info(
                            "tool_call_invalid",
                            url=ep.url,
                            mode="compat",
                            attempt=attempt + 1,
                            error=parsed.error[:300],
                        )
                        if attempt == retries:
                            return self._gave_up(raw, usage, "compat", parsed.error)
                        return await self._chat_compat(
                            ep, history, tools, on_token, opts, usage, retries=retries - attempt - 1
                        )
                return ChatResult(raw.content, [], usage, raw.finish_reason, "native")
            calls, errors = check_native(raw.tool_calls, tools)
            if not errors:
                return ChatResult(raw.content, calls, usage, raw.finish_reason or "tool_calls", "native")
            log.info("tool_call_invalid", url=ep.url, mode="native", attempt=attempt + 1, error=errors[0][:300])
            if attempt == retries:
                return self._gave_up(raw, usage, "native", errors[0])
            msgs.append(
                {
                    "role": "assistant",
                    "content": raw.content,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in raw.tool_calls
                    ],
                }
            )
            for c, err in zip(raw.tool_calls, per_call_errors(raw.tool_calls, tools), strict=True):
                msgs.append(
                    {
                        "role": "tool",
                        "tool_call_id": c["id"],
                        "name": c["name"],
                        "content": f"error: {err}"
                        if err
                        else "not run: another call in this reply was invalid; call again",
                    }
                )
        raise AssertionError("unreachable")

    async def _chat_compat(
        self,
        ep: Endpoint,
        history: list[dict[str, Any]],
        tools: list[ToolSpec],
        on_token: OnToken | None,
        opts: dict[str, Any],
        usage: Usage,
        retries: int | None = None,
    ) -> ChatResult:
        msgs = list(history)
        retries = ep.settings.compat_retries if retries is None else retries
        for attempt in range(retries + 1):
            raw = await self._complete(ep, msgs, None, on_token, opts, usage)
            parsed = compat.parse_call(raw.content, tools)
            if isinstance(parsed, compat.NoCall):
                return ChatResult(raw.content, [], usage, raw.finish_reason, "compat")
            if isinstance(parsed, compat.Call):
                return ChatResult(raw.content, [parsed.call], usage, "tool_calls", "compat")
            log.info("tool_call_invalid", url=ep.url, mode="compat", attempt=attempt + 1, error=parsed.error[:300])
            if attempt == retries:
                return self._gave_up(raw, usage, "compat", parsed.error)
            msgs += [{"role": "assistant", "content": raw.content}, compat.feedback(parsed.error)]
        raise AssertionError("unreachable")

    @staticmethod
    def _gave_up(raw: Raw, usage: Usage, mode: str, error: str) -> ChatResult:
        log.warning("tool_call_gave_up", mode=mode, error=error[:300])
        return ChatResult(raw.content, [], usage, "invalid_tool_call", mode, tool_error=error)

    # ------------------------------------------------------------------ one completion
    async def _complete(
        self,
        ep: Endpoint,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        on_token: OnToken | None,
        opts: dict[str, Any],
        usage: Usage,
    ) -> Raw:
        """One completion, adapting to the server: folds the system role, drops stream_options.

        A 400 that names a feature the model can do without (see `rejection`) is
        learnt into the profile, once, and the request sent again without it.
        """
        has_system = any(m.get("role") == "system" for m in messages)
        text = ""
        for _ in range(5):
            prof = ep.profile
            msgs = fold_system(messages) if prof.fold_system and has_system else messages
            try:
                return await with_retries(ep, prof, msgs, tools, on_token, opts, usage, self.usage)
            except openai.APIStatusError as exc:
                if not rj.is_rejection(exc):
                    raise LLMError(describe(ep, exc)) from None
                text = error_text(exc)
                system = has_system and not prof.fold_system
                with_tools = bool(tools)
                if self._learn_from(ep, prof, exc, text, system=system, opts=opts, tools=with_tools):
                    continue
                raise LLMError(describe(ep, exc)) from None
            except openai.OpenAIError as exc:
                raise LLMError(describe(ep, exc)) from None
            except TimeoutError:
                raise LLMError(
                    f"the model server at {ep.url} did not finish the reply within "
                    f"{total_timeout(ep.settings):g}s (timeout)"
                ) from None
        raise LLMError(f"the model server at {ep.url} kept rejecting the request (400): {text.lower()}")

    @staticmethod
    def _learn_from(
        ep: Endpoint,
        prof: ModelProfile,
        exc: BaseException,
        text: str,
        *,
        system: bool,
        opts: dict[str, Any],
        tools: bool,
    ) -> bool:
        """Record in the profile the feature a rejection points at; False when it is none the
        request can do without (raises `_ToolsRejected` for tools, which the caller handles)."""
        for feature in rj.rejected_features(exc, system=system, text=text):
            auto_fold = ep.settings.fold_system is None
            if feature == rj.SYSTEM_ROLE and auto_fold and prof.system_role is not False:
                ep.learn(system_role=False)
                log.info("system_role_rejected_folding", url=ep.url, model=ep.model)
                return True
            if feature == rj.STREAM_USAGE and prof.stream_usage:
                ep.learn(stream_usage=False)
                return True
            if feature == rj.MAX_COMPLETION_TOKENS and "max_tokens" in opts and (not prof.max_completion_tokens):
                ep.learn(max_completion_tokens=True)
                return True
            dropped = prof.unsupported_params
            if feature == rj.TEMPERATURE and "temperature" in opts and "temperature" not in dropped:
                ep.learn(unsupported_params=prof.unsupported_params | {"temperature"})
                return True
            if feature == rj.TOOLS and tools and ep.settings.tool_mode == "auto":
                raise _ToolsRejected(text)
        return False

    async def _summarise(self, dropped: list[dict[str, Any]]) -> str:
        from .tokens import message_text

        ep = await self._ready("fast")
        window = ep.profile.context_window or ep.settings.context_window
        limit = int(max(window - 1024, 512) * ep.counter.chars_per_token * 0.8)
        transcript = "\n\n".join(message_text(m) for m in dropped)
        if len(transcript) > limit:
            transcript = transcript[-limit:]
        res = await self.chat(
            [
                {
                    "role": "system",
                    "content": "You summarise conversations between an agent and its tools. "
                    "Keep facts, file names, decisions, errors and open problems; drop chatter.",
                },
                {
                    "role": "user",
                    "content": "Summarise this earlier part of the conversation in at most 200 words:\n\n" + transcript,
                },
            ],
            model="fast",
            max_tokens=400,
        )
        return res.content.strip()

    # ------------------------------------------------------------------ endpoints
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    def _endpoint(self, model: str) -> Endpoint:
        role = model if model in ("smart", "fast") else "smart"
        key = role if model in ("smart", "fast") else f"smart:{model}"
        ep = self._endpoints.get(key)
        if ep is None:
            s: ModelSettings = getattr(self.settings, role)
            if key.startswith("smart:"):
                s = ModelSettings(**{**s.__dict__, "model": model})
            counter = self._counters.get(s.url)
            if counter is None:
                counter = self._counters[s.url] = TokenCounter(s.url, s.api_key, s.timeout_s)
            client = openai.AsyncOpenAI(
                base_url=s.url,
                api_key=s.api_key or NO_KEY,
                timeout=s.timeout_s,
                max_retries=0,  # retries are ours (tenacity), so that they are logged and bounded
            )
            ep = self._endpoints[key] = Endpoint(role, s, client, counter, s.model, self.profiles)
        return ep

    async def _ready(self, model: str) -> Endpoint:
        """The endpoint, with its model name asked from the server when none is configured."""
        ep = self._endpoint(model)
        if ep.model:
            return ep
        async with ep.lock:
            if not ep.model:
                try:
                    page = await asyncio.wait_for(ep.client.models.list(), total_timeout(ep.settings))
                    ids = [m.id for m in page.data]
                except openai.OpenAIError as exc:
                    raise LLMError(describe(ep, exc)) from None
                except TimeoutError:
                    raise LLMError(f"the model server at {ep.url} did not list its models (timeout)") from None
                ep.model = ids[0] if ids else "default"
                log.info("model_selected", url=ep.url, role=ep.role, model=ep.model, available=len(ids))
        return ep
