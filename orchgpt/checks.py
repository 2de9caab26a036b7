"""What an agent checked, with which tool, and what came of it: the `checks` of a result.

Agents judge their work by tools and contracts that the model did not write (the
backend's mutation check, ruff, the declared routes...). Each such check is a `Check`;
a task's checks travel in ``TaskResult.data["checks"]`` as compact JSON (a list of
objects ``{"name", "tool", "outcome", "detail"}`` plus ``"required": false`` for an
advisory check), until the protocol carries them as messages::

    data[CHECKS_KEY] = dumps([Check("mutation", "agentd mutation", PASSED, "score 3/3")])
    for c in checks_of(result.data): ...

A skipped check says why in its detail (tool missing, not applicable). A task whose
required checks failed does not report success (`failed_required`).

Plain data, no protobuf: the CLI, the manager and the agents share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHECKS_KEY = "checks"
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
OUTCOMES = (PASSED, FAILED, SKIPPED)
DETAIL_LIMIT = 300


@dataclass(frozen=True)
class Check:
    """One check of an agent's work. `detail` is one line (cut to DETAIL_LIMIT)."""

    name: str  # "mutation", "ruff", "tests", "contract", ...
    tool: str  # what ran it: "pytest", "ruff", "agentd mutation", ...
    outcome: str  # passed | failed | skipped
    detail: str = ""
    required: bool = True  # a failed required check fails the task

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"check {self.name!r}: outcome must be one of {', '.join(OUTCOMES)}, not {self.outcome!r}")
        if not self.name:
            raise ValueError("a check needs a name")
        line = " ".join(self.detail.split())
        if len(line) > DETAIL_LIMIT:
            line = line[: DETAIL_LIMIT - 3] + "..."
        object.__setattr__(self, "detail", line)

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def failed(self) -> bool:
        return self.outcome == FAILED

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "tool": self.tool, "outcome": self.outcome, "detail": self.detail}
        if not self.required:
            d["required"] = False
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        outcome = str(d.get("outcome", ""))
        return cls(
            name=str(d.get("name", "")) or "?",
            tool=str(d.get("tool", "")),
            outcome=outcome if outcome in OUTCOMES else SKIPPED,
            detail=str(d.get("detail", ""))
            if outcome in OUTCOMES
            else f"unknown outcome {outcome!r}: {d.get('detail', '')}",
            required=bool(d.get("required", True)),
        )


def dumps(checks: Iterable[Check]) -> str:
    """Compact JSON for ``data["checks"]``."""
    return json.dumps([c.to_dict() for c in checks], separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> list[Check]:
    """The checks of a ``data["checks"]`` value; ValueError when it is not a list of checks."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"checks are not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ValueError("checks must be a JSON list of objects")
    return [Check.from_dict(x) for x in raw]


def checks_of(result: Any) -> list[Check]:
    """The checks of a result (a TaskResult, an agent's Outcome: their ``checks``), or of a
    result's ``data`` mapping (the JSON under ``data["checks"]`` of older results); [] when
    none, or when they cannot be read."""
    own = getattr(result, "checks", None)
    if own:
        return list(own)
    data = getattr(result, "data", result)
    text = data.get(CHECKS_KEY, "") if isinstance(data, Mapping) else ""
    if not text:
        return []
    try:
        return loads(text)
    except ValueError:
        return []


def failed_required(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.failed and c.required]


def summary(checks: Iterable[Check]) -> str:
    """'4 checks: 3 passed, 1 skipped' (failed ones named)."""
    cs = list(checks)
    if not cs:
        return "no checks"
    counts = {o: sum(c.outcome == o for c in cs) for o in OUTCOMES}
    parts = [f"{n} {o}" for o, n in counts.items() if n]
    failed = [c.name for c in cs if c.failed]
    return f"{len(cs)} checks: " + ", ".join(parts) + (f" ({', '.join(failed)})" if failed else "")


def markdown_table(rows: Iterable[tuple[str, Iterable[Check]]]) -> list[str]:
    """A Markdown table of the checks of several results: ``rows`` are (who, checks) pairs.
    Empty when none of them carries checks."""
    lines = ["| Sub-task | Check | Tool | Outcome | Detail |", "|---|---|---|---|---|"]
    for who, checks in rows:
        for c in checks:
            detail = c.detail.replace("|", "\\|") or "-"
            outcome = c.outcome + ("" if c.required else " (advisory)")
            lines.append(f"| {who} | {c.name} | {c.tool} | {outcome} | {detail} |")
    return lines if len(lines) > 2 else []
