"""Token counting: tiktoken for OpenAI models, a llama.cpp-style ``/tokenize``
endpoint where the server has one, and an estimate otherwise.

One `TokenCounter` per server. Whether the server tokenizes is found out once
(and cached); exact counts are cached per text, and they calibrate the
estimate the synchronous `count` uses for texts not seen yet.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from typing import Any

import httpx

from orchgpt import logs

from .compat import _text

log = logs.get("agentd.llm.tokens")

PER_MESSAGE = 4  # role and separators of a chat template
PER_REPLY = 3  # the assistant header the template adds for the reply
_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "davinci", "babbage")

_encodings: dict[str, Any] = {}  # encoding name -> tiktoken.Encoding, or None when it cannot be loaded


def is_openai_model(model: str) -> bool:
    return model.lower().split("/")[-1].startswith(_OPENAI_PREFIXES)


def tiktoken_encoding(model: str) -> Any:
    """The tiktoken encoding of an OpenAI model, or None while it is not loaded.

    tiktoken fetches its files from the network the first time; that can block for
    seconds (or fail, offline), so it is loaded on a background thread and the
    estimate or the server's /tokenize is used until it is there. Never blocks the
    event loop (a blocked loop misses heartbeats).
    """
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(model.split("/")[-1])
    except KeyError:
        name = "o200k_base"
    if name in _encodings:
        return _encodings[name]
    with _loading_lock:
        if name not in _loading:
            _loading.add(name)
            threading.Thread(target=_load_encoding, args=(name,), name=f"tiktoken:{name}", daemon=True).start()
    return None


_loading: set[str] = set()
_loading_lock = threading.Lock()


def _load_encoding(name: str) -> None:
    import tiktoken

    try:
        _encodings[name] = tiktoken.get_encoding(name)
    except Exception as exc:  # offline, blocked, corrupt cache
        log.warning("tiktoken_unavailable", encoding=name, error=str(exc)[:200])
        _encodings[name] = None


def message_text(m: dict[str, Any]) -> str:
    parts = [str(m.get("role", "")), _text(m.get("content"))]
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function") or {}
        parts.append(str(fn.get("name", "")))
        args = fn.get("arguments", "")
        parts.append(args if isinstance(args, str) else json.dumps(args))
    if m.get("name"):
        parts.append(str(m["name"]))
    return "\n".join(p for p in parts if p)


def root_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port`` (where llama.cpp serves /tokenize)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class TokenCounter:
    """Counts tokens for one server."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url
        self._root = root_url(base_url)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = min(timeout_s, 10.0)
        self.endpoint: str | None = None  # "/tokenize", "/extras/tokenize/count", "none"; None = not probed yet
        self._cache: OrderedDict[str, int] = OrderedDict()
        self.chars_per_token = 3.5  # calibrated from exact counts
        self._exact_chars = 0
        self._exact_tokens = 0

    # ---- synchronous: cache, tiktoken or estimate
    def text(self, text: str, model: str) -> int:
        if not text:
            return 0
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        if is_openai_model(model):
            enc = tiktoken_encoding(model)
            if enc is not None:
                return len(enc.encode(text, disallowed_special=()))
        return math.ceil(len(text) / self.chars_per_token)

    def messages(self, messages: list[dict[str, Any]], model: str) -> int:
        return PER_REPLY + sum(PER_MESSAGE + self.text(message_text(m), model) for m in messages)

    # ---- asynchronous: asks the server's tokenizer when there is one
    async def text_exact(self, text: str, model: str, client: httpx.AsyncClient) -> int:
        if not text:
            return 0
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        if is_openai_model(model) and tiktoken_encoding(model) is not None:
            return self.text(text, model)
        if self.endpoint != "none":
            n = await self._tokenize(text, client)
            if n is not None:
                self._remember(text, n)
                return n
        return self.text(text, model)

    async def messages_exact(self, messages: list[dict[str, Any]], model: str, client: httpx.AsyncClient) -> int:
        total = PER_REPLY
        for m in messages:
            total += PER_MESSAGE + await self.text_exact(message_text(m), model, client)
        return total

    def _remember(self, text: str, n: int) -> None:
        self._cache[text] = n
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        self._exact_chars += len(text)
        self._exact_tokens += n
        if self._exact_tokens >= 20:
            self.chars_per_token = max(1.0, self._exact_chars / self._exact_tokens)

    async def _tokenize(self, text: str, client: httpx.AsyncClient) -> int | None:
        candidates = [self.endpoint] if self.endpoint else ["/tokenize", "/extras/tokenize/count"]
        for path in candidates:
            assert path is not None
            body: dict[str, Any] = {"content": text} if path == "/tokenize" else {"input": text}
            try:
                r = await client.post(self._root + path, json=body, headers=self._headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                log.debug("tokenize_failed", url=self._root + path, error=str(exc)[:200])
                return None  # server trouble: estimate this time, probe again later
            if r.status_code in (404, 405, 501) or (r.status_code == 400 and self.endpoint is None):
                continue
            if r.status_code != 200:
                return None
            try:
                data = r.json()
                n = int(data["count"]) if "count" in data else len(data["tokens"])
            except (ValueError, KeyError, TypeError):
                continue
            if self.endpoint != path:
                log.info("tokenize_endpoint", url=self._root + path)
            self.endpoint = path
            return n
        if self.endpoint is None:
            log.info("tokenize_absent", url=self._root)
            self.endpoint = "none"
        return None
