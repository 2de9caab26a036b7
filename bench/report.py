"""The results table: figure, orchgpt, baseline, ratio, target, pass/fail (Markdown and JSON)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    figure: str
    orchgpt: float | None
    baseline: float | None
    baseline_name: str
    unit: str
    ratio: float | None = None  # orchgpt / baseline unless said otherwise
    target: str = "—"
    passed: bool | None = None
    note: str = ""
    goal: float | None = None  # the target's number, on what ``check`` tests: the miss is measured to it
    lower_is_better: bool = False
    why: str = ""  # for a miss: what the profile shows (a footnote of its own)
    subject: float | None = None  # the value the target applies to (the ratio or orchgpt's figure)

    def miss(self) -> str:
        """By how much a failed row misses its goal ("" when it passed or has no goal)."""
        if self.passed is not False or self.goal is None or self.subject is None or self.goal == 0:
            return ""
        if self.lower_is_better:
            return f"{self.subject / self.goal:.1f}× the target" if self.subject > 0 else ""
        return f"by {100 * (1 - self.subject / self.goal):.0f} %"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def row(
    figure: str,
    orch: float | None,
    base: float | None,
    base_name: str,
    unit: str,
    target: str = "—",
    check: Callable[[float], bool] | None = None,
    on: str = "ratio",
    note: str = "",
    ratio_of: float | None = None,
    goal: float | None = None,
    lower_is_better: bool = False,
    why: str = "",
) -> Row:
    """A row; ``check`` is applied to the ratio (on="ratio") or to orchgpt's value (on="value").
    ``ratio_of`` overrides orch/base (e.g. the median of per-round ratios)."""
    r = Row(
        figure, orch, base, base_name, unit, ratio_of if ratio_of is not None else ratio(orch, base), target, None, note
    )
    subject = r.ratio if on == "ratio" else r.orchgpt
    r.subject, r.goal, r.lower_is_better, r.why = subject, goal, lower_is_better, why
    if check is not None and subject is not None:
        r.passed = bool(check(subject))
    return r


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def markdown(rows: Sequence[Row]) -> str:
    out = ["| figure | orchgpt | baseline | ratio | target | pass |", "| --- | ---: | ---: | ---: | --- | :---: |"]
    notes: dict[str, int] = {}
    for r in rows:
        base = "n/a" if r.baseline is None else f"{_fmt(r.baseline, r.unit)} ({r.baseline_name})"
        verdict = {True: "pass", False: "FAIL", None: "—"}[r.passed]
        if r.passed is False:
            miss = r.miss()
            verdict = "FAIL" + ("" if not miss else f" {miss}" if miss.startswith("by") else f": {miss}")
            if r.why:
                verdict += f" [{notes.setdefault(r.why, len(notes) + 1)}]"
        ratio_s = "n/a" if r.ratio is None else f"{r.ratio:.2f}×"
        fig = r.figure
        if r.note:
            fig += f" [{notes.setdefault(r.note, len(notes) + 1)}]"
        out.append(f"| {fig} | {_fmt(r.orchgpt, r.unit)} | {base} | {ratio_s} | {r.target} | {verdict} |")
    if notes:
        out.append("")
        out.extend(f"[{i}] {note}" for note, i in notes.items())
    return "\n".join(out)


def machine_lines(info: dict[str, Any], placement: str) -> str:
    return (
        f"Machine: {info.get('cpu')}, {info.get('cores')} cores, {info.get('memory_gib')} GiB; "
        f"Python {info.get('python')}, grpcio {info.get('grpcio')}, protobuf {info.get('protobuf')}; "
        f"{info.get('date')}; load average at start {info.get('loadavg')}.\n"
        f"Placement: {placement}."
    )
