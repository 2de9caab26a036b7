"""The frontend in a real browser: headless Chromium loads the page against the running backend.

The page must render (some text in the body), log no console error, throw no uncaught
exception, and every API call it makes must succeed (below 400). A screenshot is saved as an
artifact. The probe (browser_probe.py) runs in the task's sandbox; Chromium is Debian's
(``chromium``), driven by Playwright's Python package. Without either the check is skipped and
says why (``node --check`` stays the quick check).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchgpt.checks import FAILED, PASSED, SKIPPED, Check

from ..sandbox import Limits, Sandbox, WeakSandboxRefused

TOOL = "chromium (playwright)"
SCREENSHOT = "screenshots/frontend.png"
SPEC = ".orchgpt/browser-probe.json"
PROBE = Path(__file__).with_name("browser_probe.py")
TIMEOUT_S = 90.0


def chromium() -> str | None:
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


def unavailable() -> str:
    """Why the browser check cannot run here ('' when it can)."""
    if chromium() is None:
        return "Chromium is not installed (Debian: chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed"
    return ""


@dataclass
class BrowserReport:
    check: Check
    problems: list[str] = field(default_factory=list)
    screenshot: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def judge(rep: dict[str, Any]) -> tuple[list[str], str]:
    """The problems a probe report shows, and a one-line summary."""
    if not rep.get("loaded"):
        return [f"the page did not load in Chromium: {rep.get('error', 'no report')}"], "did not load"
    problems = [f"console error in the browser: {e}" for e in rep.get("console_errors", [])[:5]]
    problems += [f"uncaught exception in the browser: {e}" for e in rep.get("page_errors", [])[:5]]
    bad = [a for a in rep.get("api", []) if int(a.get("status") or 0) >= 400]
    problems += [f"the page's call {a['method']} {a['path']} answered {a['status']}" for a in bad[:5]]
    problems += [f"request failed in the browser: {f}" for f in rep.get("failed", [])[:5]]
    if not problems and not rep.get("text_chars"):
        problems.append("the page renders no text in the browser (an empty body)")
    calls = rep.get("api", [])
    ok = len(calls) - len(bad)
    summary = (
        f"rendered {rep.get('text_chars', 0)} characters, {ok} of {len(calls)} API call(s) "
        f"succeeded, backend {rep.get('backend', 'none')}"
    )
    return problems, summary


async def browser_check(ws_root: Path, folder: str, manifest: dict[str, Any] | None, settings: Any) -> BrowserReport:
    """Load ``folder/index.html`` in Chromium inside the sandbox; the check and its problems."""
    why = unavailable()
    if why:
        return BrowserReport(Check("browser", TOOL, SKIPPED, why, required=False))
    spec = {"dir": str(ws_root / folder), "chromium": chromium(), "screenshot": str(ws_root / SCREENSHOT)}
    if manifest and isinstance(manifest.get("start"), str):
        spec["start"] = manifest["start"]
        spec["startup_s"] = manifest.get("startup_s", 15)
    (ws_root / SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
    (ws_root / SPEC).parent.mkdir(parents=True, exist_ok=True)
    (ws_root / SPEC).write_text(json.dumps(spec))
    # Chromium reserves far more address space than any sane RLIMIT_AS (as for mmdc).
    limits = Limits(timeout_s=TIMEOUT_S, memory_mb=0, file_size_mb=64)
    try:
        r = await Sandbox.for_settings(ws_root, settings, limits).run([sys.executable, "-c", PROBE.read_text(), SPEC])
    except WeakSandboxRefused as exc:
        return BrowserReport(Check("browser", TOOL, SKIPPED, f"not run: {exc}", required=False))
    finally:
        (ws_root / SPEC).unlink(missing_ok=True)
    line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("BROWSER-REPORT ")), "")
    if not line:
        detail = f"the browser probe gave no report: {r.describe(300)}"
        return BrowserReport(Check("browser", TOOL, FAILED, detail), [detail])
    rep = json.loads(line[len("BROWSER-REPORT ") :])
    problems, summary = judge(rep)
    shot = SCREENSHOT if (ws_root / SCREENSHOT).is_file() else ""
    if problems:
        return BrowserReport(Check("browser", TOOL, FAILED, "; ".join(problems)), problems, shot, rep)
    return BrowserReport(Check("browser", TOOL, PASSED, summary), [], shot, rep)
