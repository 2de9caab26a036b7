"""The contract from the design: the service serves each method and path the architect declared.

`design_routes` reads the ``## Endpoints`` section of ARCHITECTURE.md (the table
``| Method | Path | ... |``). The backend starts the service in the sandbox and calls each
route (with ``{}`` as the body of a POST, PUT or PATCH, and ``1`` for a path parameter);
when the service publishes an OpenAPI schema (``/openapi.json``, as FastAPI does) the
schema says whether a route exists, otherwise the answer does: 404 on a path without
parameters, or 405, means the route is missing. A 404 on a path with parameters cannot
tell a missing route from a missing item without a schema: it is reported, not failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..agents._architect_sections import parse_endpoints
from ..agents._markdown import find_section, section_bodies

TOOL = "ARCHITECTURE.md endpoints"
_SECTION = re.compile(r"\b(endpoints?|apis?|routes)\b", re.I)  # the architect's own pattern
_PARAM = re.compile(r"\{[^}]*\}|:[A-Za-z_]\w*|<[^>]*>")
_WITH_BODY = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as declared: /todos/{id}

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def has_params(self) -> bool:
        return bool(_PARAM.search(self.path))

    def probe(self) -> dict[str, Any]:
        """The request the probe makes for it."""
        d: dict[str, Any] = {"method": self.method, "path": _PARAM.sub("1", self.path), "contract": True}
        if self.method in _WITH_BODY:
            d["body"] = {}
        return d


def design_routes(doc: str) -> list[Route]:
    """The routes of the design's Endpoints section (none when it has no such section)."""
    sec = find_section(section_bodies(doc), _SECTION) if doc else None
    if not sec:
        return []
    return [Route(e.method, e.path.split("?")[0].rstrip("/") or "/") for e in parse_endpoints(sec[1])]


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _same_path(a: str, b: str) -> bool:
    x, y = _segments(a), _segments(b)
    return len(x) == len(y) and all(
        s == t or _PARAM.fullmatch(s) is not None or _PARAM.fullmatch(t) is not None for s, t in zip(x, y, strict=True)
    )


@dataclass
class ContractReport:
    routes: list[Route]
    missing: list[str] = field(default_factory=list)  # "DELETE /todos/{id}: 405"
    served: list[str] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)
    source: str = ""  # "the service's OpenAPI schema" or "the answers"

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        head = f"{len(self.served)} of {len(self.routes)} declared route(s) served (judged by {self.source})"
        if self.missing:
            head += "; missing: " + ", ".join(self.missing)
        if self.unsure:
            head += "; not verified: " + ", ".join(self.unsure)
        return head


def judge(
    routes: Sequence[Route], rows: Sequence[Mapping[str, Any]], openapi: Mapping[str, Any] | None
) -> ContractReport:
    """Which declared routes the service serves, from the probe's rows (one per route, in order)
    and the OpenAPI schema's ``paths`` when the service published one."""
    report = ContractReport(list(routes), source="the service's OpenAPI schema" if openapi else "the service's answers")
    for route, row in zip(routes, rows, strict=False):
        status = row.get("status")
        if openapi:
            methods = {
                m.upper()
                for p, ops in openapi.items()
                if _same_path(p, route.path)
                for m in (ops if isinstance(ops, dict) else {})
            }
            if route.method in methods:
                report.served.append(str(route))
            else:
                why = "not in the schema" if not methods else f"the path has only {', '.join(sorted(methods))}"
                report.missing.append(f"{route}: {why}")
            continue
        if status is None:
            report.missing.append(f"{route}: no answer ({row.get('error', 'error')})")
        elif status == 405 or (status == 404 and not route.has_params):
            report.missing.append(f"{route}: {status}")
        elif status == 404:
            report.unsure.append(f"{route}: 404")
        else:
            report.served.append(str(route))
    return report


def feedback(report: ContractReport) -> str:
    lines = "\n".join(f"- {m}" for m in report.missing)
    return (
        f"The architect's design (ARCHITECTURE.md, section Endpoints) declares routes that the "
        f"service does not serve:\n{lines}\nImplement them (the same method and path), and list "
        "them in service.json too; then answer with one line."
    )
