"""Model server failures in words: what to retry, and what to tell the user."""

from __future__ import annotations

import openai

from ..settings import ModelSettings
from .endpoint import Endpoint


def describe(ep: Endpoint, exc: BaseException) -> str:
    """What went wrong with a request to ``ep``, for the user (names the server and the fix)."""
    url, s = ep.url, ep.settings
    retried = f" after {s.max_retries} retries" if s.max_retries else ""
    if isinstance(exc, openai.APITimeoutError):
        again = " (tried twice)" if s.max_retries else ""
        return f"the model server at {url} did not answer within {s.timeout_s:g}s (timeout){again}"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the model server at {url}: {cause(exc)}{retried}"
    if isinstance(exc, openai.AuthenticationError):
        return (
            f"the model server at {url} rejected the API key (401 Unauthorized): {error_text(exc)}; "
            "check OPENAI_API_KEY (or ORCHGPT_FAST_API_KEY / ORCHGPT_<TYPE>_API_KEY)"
        )
    if isinstance(exc, openai.PermissionDeniedError):
        return f"the model server at {url} refused access (403 Forbidden): {error_text(exc)}"
    if isinstance(exc, openai.NotFoundError):
        return (
            f"the model server at {url} does not know the model {ep.model!r} (404): {error_text(exc)}; "
            "check ORCHGPT_MODEL"
        )
    if isinstance(exc, openai.RateLimitError):
        return f"the model server at {url} kept rate limiting (429){retried}: {error_text(exc)}"
    if isinstance(exc, openai.APIStatusError):
        what = "failed" if exc.status_code >= 500 else "rejected the request"
        again = retried if exc.status_code >= 500 else ""
        return f"the model server at {url} {what} ({exc.status_code}){again}: {error_text(exc)}"
    return f"the model server at {url} gave an unusable answer: {exc}"


def total_timeout(s: ModelSettings) -> float:
    """A whole streamed reply may take longer than one read; still, never wait forever."""
    return s.timeout_s * 10


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError):
        return "insufficient_quota" not in error_text(exc)
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 409)
    return isinstance(exc, openai.APIConnectionError)


def error_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if body.get("detail"):
            return str(body["detail"])[:500]
    if isinstance(body, str) and body:
        return body[:500]
    return (getattr(exc, "message", None) or str(exc))[:500]


def cause(exc: BaseException) -> str:
    seen: list[str] = []
    cur: BaseException | None = exc.__cause__ or exc.__context__
    while cur is not None and len(seen) < 5:
        seen.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    text = " ".join(seen).lower()
    if "refused" in text or "errno 111" in text:
        return "connection refused (is the server running?)"
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "the host name does not resolve"
    if "ssl" in text or "certificate" in text:
        return "TLS error: " + (seen[0][:200] if seen else "")
    return (seen[0][:200] if seen and seen[0] else str(exc)) or "connection error"


def short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, openai.APIStatusError):
        return f"{exc.status_code}: {error_text(exc)[:120]}"
    return f"{type(exc).__name__}: {str(exc)[:120]}"
