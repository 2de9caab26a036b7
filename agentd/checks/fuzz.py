"""Property-based API testing of the backend's service with schemathesis.

The backend's route probe (agentd/agents/_backend_service.py) starts the service in the
sandbox and, when this check is on, runs ``schemathesis run URL/openapi.json`` against it with
the checks ``not_a_server_error`` and ``response_schema_conformance``, a bounded number of
generated cases per operation (option ``fuzz``, default ``DEFAULT_EXAMPLES``; ``0`` turns it
off) and a fixed seed, so that a round's failure is reproducible in the next. Failures go back
to the model with the failing request as schemathesis prints it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchgpt.checks import FAILED, PASSED, SKIPPED, Check

TOOL = "schemathesis"
DEFAULT_EXAMPLES = 30
TIMEOUT_S = 60.0
FEEDBACK_CHARS = 2500
_SUMMARY = re.compile(r"(\d+) generated, (.*)")


def examples(options: Mapping[str, str], log: Callable[[str], None] | None = None) -> int:
    """Cases per operation for schemathesis (option ``fuzz``; 0 when off or not installed)."""
    raw = options.get("fuzz", str(DEFAULT_EXAMPLES)).strip() or "0"
    n = int(raw) if raw.isdigit() else DEFAULT_EXAMPLES
    why = available()
    if n and why:
        if log is not None:
            log(f"schemathesis check skipped: {why}")
        return 0
    return n


def available() -> str:
    """'' when schemathesis can run here, else why not."""
    if importlib.util.find_spec("schemathesis") is None:
        return "schemathesis is not installed (pip install 'orchgpt[checks]')"
    return ""


@dataclass
class FuzzReport:
    check: Check
    feedback: str = ""  # for the model, when the check failed


def _failures(out: str) -> str:
    """The FAILURES part of schemathesis' output (the failing requests), else its end."""
    start = out.find("FAILURES")
    part = out[start:] if start >= 0 else out
    end = part.find("SUMMARY")
    return (part[:end] if end > 0 else part).strip()[-FEEDBACK_CHARS:]


def judge(raw: dict[str, Any]) -> FuzzReport:
    """The check from the probe's ``fuzz`` entry."""
    if "skipped" in raw:
        return FuzzReport(Check("schemathesis", TOOL, SKIPPED, str(raw["skipped"]), required=False))
    out = str(raw.get("out", ""))
    m = _SUMMARY.search(out)
    counts = f"{m.group(1)} cases generated, {m.group(2).strip()}" if m else ""
    if raw.get("rc") == 0:
        return FuzzReport(Check("schemathesis", TOOL, PASSED, counts or "no issues found"))
    if raw.get("rc") is None:
        return FuzzReport(
            Check("schemathesis", TOOL, FAILED, out[:200]),
            f"schemathesis could not finish against the service: {out[:500]}",
        )
    if "No module named" in out or "ModuleNotFoundError" in out:
        why = "schemathesis is not importable in the sandbox"
        return FuzzReport(Check("schemathesis", TOOL, SKIPPED, why, required=False))
    failures = _failures(out)
    ops = re.findall(r"^_{3,} (\S+ \S+) _{3,}$", failures, re.M)
    kinds = re.findall(r"^- (ST\d+ [^\n]+)$", failures, re.M)
    first = "; ".join(f"{op}: {k}" for op, k in zip(ops, kinds, strict=False))
    detail = "; ".join(x for x in (counts, first) if x) or "schemathesis found problems"
    feedback = (
        "The tests pass, but property-based testing of the service's OpenAPI schema "
        "(schemathesis) found requests the service does not handle: a 5xx answer or an "
        "answer that does not match the schema. Make the service validate its input and "
        "answer within its schema. What schemathesis found:\n" + failures
    )
    return FuzzReport(Check("schemathesis", TOOL, FAILED, detail), feedback)
