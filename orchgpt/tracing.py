"""OpenTelemetry traces for every process of the mesh (docs/operations.md, "Traces").

Off unless an OTLP endpoint is configured (``--otlp-endpoint`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); then spans go to it
over OTLP/HTTP (protobuf) from a batching processor. While off, ``ENABLED`` is False, nothing of
OpenTelemetry is imported, and every helper here returns at its first line: the hot paths pay one
module-attribute read.

The trace context crosses processes as W3C ``traceparent``/``tracestate`` strings: gRPC metadata
from a client to the daemon, two envelope fields between the daemon and its agents. This module
knows only strings; the transport modules put them on the wire.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import logs

log = logs.get("orchgpt.tracing")

ENABLED = False  # read on hot paths: True once configure() installed a tracer provider
CAPTURE_CONTENT = False  # prompts and completions on the model spans (opt-in, see configure)
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
# the GenAI conventions' opt-in for message content (the official instrumentations read it too)
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SCOPE = "orchgpt"

_provider: Any = None
_NULL = contextlib.nullcontext()


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(TRACES_ENDPOINT_ENV) or env.get(ENDPOINT_ENV) or "").strip()


def _disabled_by_env() -> bool:
    return (
        os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
        or os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none"
    )


def configure(service: str, endpoint: str = "", quiet: bool = False, export_timeout: float | None = None) -> bool:
    """Install the tracer provider when an endpoint is configured; True when tracing is on.

    ``endpoint`` (a flag) wins over the environment, and is put in the environment so that the
    agents this process spawns export to the same collector. A base URL gets ``/v1/traces``.
    ``quiet``: log nothing (the CLI, whose output is its stdout). ``export_timeout``: seconds an
    export may take with its retries (the CLI's exit waits for the last one; an
    OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT setting wins).
    """
    global ENABLED, CAPTURE_CONTENT, _provider
    if ENABLED:
        return True
    endpoint = endpoint.strip()
    if endpoint:  # a full .../v1/traces URL is the traces endpoint; a base URL gets it appended
        full = endpoint.rstrip("/").endswith("/v1/traces")
        os.environ[TRACES_ENDPOINT_ENV if full else ENDPOINT_ENV] = endpoint
    elif not endpoint_from_env():
        return False
    if _disabled_by_env():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        if not quiet:
            log.warning(
                "tracing_unavailable",
                error=str(exc),
                hint="pip install 'orchgpt[otel]' to export traces",
            )
        return False
    url = endpoint_from_env() if not endpoint else endpoint
    if endpoint and not url.rstrip("/").endswith("/v1/traces"):
        url = url.rstrip("/") + "/v1/traces"
    kw: dict[str, Any] = {"endpoint": url} if endpoint else {}  # else read (and completed) from env
    if export_timeout is not None and not any(
        os.environ.get(f"OTEL_EXPORTER_OTLP{k}_TIMEOUT") for k in ("", "_TRACES")
    ):
        kw["timeout"] = export_timeout
    exporter = OTLPSpanExporter(**kw)
    name = os.environ.get("OTEL_SERVICE_NAME") or service
    _provider = TracerProvider(resource=Resource.create({"service.name": name}))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)
    CAPTURE_CONTENT = os.environ.get(CAPTURE_ENV, "").lower() in ("1", "true", "yes")
    ENABLED = True
    atexit.register(shutdown)
    if not quiet:
        log.info("tracing_on", service=name, endpoint=url, capture_content=CAPTURE_CONTENT)
    return True


def shutdown() -> None:
    """Export what is left (bounded by the SDK's own timeouts) and stop."""
    global ENABLED, _provider
    p, _provider = _provider, None
    ENABLED = False
    if p is not None:
        try:
            p.shutdown()
        except Exception as exc:  # never fails an exit
            log.warning("tracing_shutdown_error", error=str(exc))


def tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(SCOPE)


# ---------------------------------------------------------------- context as strings
_propagator: Any = None


def _w3c() -> Any:
    global _propagator
    if _propagator is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _propagator = TraceContextTextMapPropagator()
    return _propagator


def current_carrier(ctx: Any = None) -> tuple[str, str]:
    """(traceparent, tracestate) of the current span (or of ``ctx``); empty when off or none."""
    if not ENABLED:
        return "", ""
    carrier: dict[str, str] = {}
    _w3c().inject(carrier, context=ctx)
    return carrier.get(TRACEPARENT, ""), carrier.get(TRACESTATE, "")


def context_from(traceparent: str, tracestate: str = "") -> Any:
    """The OpenTelemetry context a traceparent names (an empty context when it names none)."""
    carrier = {TRACEPARENT: traceparent[:128]}
    if tracestate:
        carrier[TRACESTATE] = tracestate[:512]
    return _w3c().extract(carrier)


def grpc_metadata() -> Sequence[tuple[str, str]] | None:
    """Metadata for an outgoing RPC: the current trace context (None when off or none)."""
    if not ENABLED:
        return None
    tp, ts = current_carrier()
    if not tp:
        return None
    return ((TRACEPARENT, tp), (TRACESTATE, ts)) if ts else ((TRACEPARENT, tp),)


def from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> tuple[str, str]:
    tp = ts = ""
    for k, v in metadata or ():
        if k == TRACEPARENT and isinstance(v, str):
            tp = v
        elif k == TRACESTATE and isinstance(v, str):
            ts = v
    return tp, ts


@contextlib.contextmanager
def _span(name: str, parent: tuple[str, str] | None, kind: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    from opentelemetry import trace

    ctx = context_from(*parent) if parent and parent[0] else None
    with tracer().start_as_current_span(
        name, context=ctx, kind=getattr(trace.SpanKind, kind), attributes=dict(attributes)
    ) as span:
        yield span


def span(
    name: str, parent: tuple[str, str] | None = None, kind: str = "INTERNAL", **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it; its parent is ``parent`` (traceparent,
    tracestate) when given, else the current span. A shared no-op when tracing is off.
    An exception leaving the block marks the span as an error (OpenTelemetry's default)."""
    if not ENABLED:
        return _NULL
    return _span(name, parent, kind, {k: v for k, v in attributes.items() if v not in (None, "")})


def log_ids(_: Any, __: str, event_dict: Any) -> Any:
    """structlog processor: the current trace and span ids on each line (only while on)."""
    if ENABLED:
        from opentelemetry import trace

        sc = trace.get_current_span().get_span_context()
        if sc.is_valid:
            event_dict.setdefault("trace_id", format(sc.trace_id, "032x"))
            event_dict.setdefault("span_id", format(sc.span_id, "016x"))
    return event_dict
