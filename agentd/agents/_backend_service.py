"""Starting the service the backend agent built and checking its routes: ``service.json``
(the manifest the model writes), the probe that runs in the sandbox, and what it reports.
The same start checks the design's routes (the contract, agentd.checks.contract).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from ..checks import contract, fuzz
from ..workspace import Workspace
from ._llm_agent import Session

MANIFEST = "service.json"
CONTRACT_SCRATCH = ".orchgpt/contract.json"  # the design's routes for the probe, removed after

PROBE = r"""
import json, os, signal, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request
m = json.load(open(sys.argv[1]))
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cmd = str(m["start"]).replace("{port}", str(port)).replace("$PORT", str(port))
log = tempfile.TemporaryFile()
p = subprocess.Popen(cmd, shell=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     env=dict(os.environ, PORT=str(port), HOST="127.0.0.1"), start_new_session=True)
report = {"port": port, "command": cmd, "routes": [], "up": False}
deadline = time.monotonic() + float(m.get("startup_s", 15))
while time.monotonic() < deadline and p.poll() is None:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); report["up"] = True; break
    except OSError:
        time.sleep(0.1)
if report["up"]:
    for r in m.get("routes") or []:
        method = str(r.get("method", "GET")).upper(); path = str(r.get("path", "/"))
        import re as _re
        path = _re.sub(r"\{[^}]*\}", "1", path)
        data = None; headers = {}
        if r.get("body") is not None:
            data = json.dumps(r["body"]).encode(); headers["Content-Type"] = "application/json"
        want = r.get("status")
        row = {"method": method, "path": path, "expected": want}
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers), timeout=5) as resp:
                row["status"] = resp.status
        except urllib.error.HTTPError as e:
            row["status"] = e.code
        except Exception as e:
            row["status"] = None; row["error"] = f"{type(e).__name__}: {e}"
        st = row["status"]
        row["ok"] = st is not None and (st == int(want) if want else st < 400)
        report["routes"].append(row)
if report["up"] and len(sys.argv) > 2:  # the design's routes: the contract check
    extra = json.load(open(sys.argv[2]))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as resp:
            paths = json.load(resp).get("paths")
            report["openapi"] = paths if isinstance(paths, dict) else None
    except Exception:
        report["openapi"] = None
    report["contract"] = []
    for r in extra["routes"]:
        data = json.dumps(r["body"]).encode() if r.get("body") is not None else None
        row = {"method": r["method"], "path": r["path"]}
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}{r['path']}", data=data, method=r["method"],
                    headers={"Content-Type": "application/json"} if data else {}), timeout=5) as resp:
                row["status"] = resp.status
        except urllib.error.HTTPError as e:
            row["status"] = e.code
        except Exception as e:
            row["status"] = None; row["error"] = f"{type(e).__name__}: {e}"
        report["contract"].append(row)
fuzz_n = int(os.environ.get("ORCHGPT_FUZZ_EXAMPLES", "0") or 0)
if report["up"] and fuzz_n > 0:  # schemathesis against the service's own OpenAPI schema
    url = f"http://127.0.0.1:{port}/openapi.json"
    try:
        urllib.request.urlopen(url, timeout=5).close(); has_schema = True
    except Exception:
        has_schema = False
    if not has_schema:
        report["fuzz"] = {"skipped": "the service publishes no OpenAPI schema at /openapi.json"}
    else:
        st = ["-c", "from schemathesis.cli import schemathesis; schemathesis()", "run", url, "--checks",
              "not_a_server_error,response_schema_conformance", "-n", str(fuzz_n), "--seed", "1",
              "--request-timeout", "5"]
        try:
            r = subprocess.run([sys.executable, *st], capture_output=True, text=True,
                               timeout=float(os.environ.get("ORCHGPT_FUZZ_TIMEOUT", "60")),
                               env=dict(os.environ, NO_COLOR="1"))
            report["fuzz"] = {"rc": r.returncode, "out": (r.stdout + r.stderr)[-6000:]}
        except subprocess.TimeoutExpired:
            report["fuzz"] = {"rc": None, "out": "schemathesis did not finish in time"}
report["exited"] = p.poll()
try:
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(3)
except Exception:
    try: os.killpg(p.pid, signal.SIGKILL)
    except Exception: pass
log.seek(0); report["log"] = log.read().decode(errors="replace")[-3000:]
print("ROUTE-REPORT " + json.dumps(report))
"""


@dataclass
class RouteCheck:
    ok: bool
    summary: str  # "GET /health 200, GET /todos 200"
    problem: str  # for the model, when not ok


def read_manifest(ws: Workspace) -> tuple[dict[str, object], str]:
    if not ws.exists(MANIFEST):
        return {}, (
            f"{MANIFEST} is missing: write it with the command that starts the service and the routes to check."
        )
    try:
        m = json.loads(ws.read_text(MANIFEST))
    except json.JSONDecodeError as exc:
        return {}, f"{MANIFEST} is not valid JSON: {exc}"
    if not isinstance(m, dict):
        return {}, f"{MANIFEST} must hold a JSON object"
    problems = []
    start = m.get("start")
    if not isinstance(start, str) or ("{port}" not in start and "$PORT" not in start):
        problems.append('"start" must be a shell command containing {port}')
    routes = m.get("routes")
    if (
        not isinstance(routes, list)
        or not routes
        or not all(isinstance(r, dict) and str(r.get("path", "")).startswith("/") for r in routes)
    ):
        problems.append('"routes" must be a non-empty list of {"method", "path" (starting with /), "status"}')
    return m, (f"{MANIFEST}: " + "; ".join(problems)) if problems else ""


async def check_routes(
    s: Session, ws: Workspace, design: list[contract.Route], fuzz_examples: int = 0
) -> tuple[RouteCheck, contract.ContractReport | None, fuzz.FuzzReport | None]:
    """The routes of service.json, the design's routes when there is a design (the contract),
    and schemathesis on the service's OpenAPI schema (``fuzz_examples`` > 0), from one start
    of the service in the sandbox."""
    s.ctx.status("starting the service to check its routes")
    timeout = min(s.env.sandbox.limits.timeout_s, 45 + (fuzz.TIMEOUT_S if fuzz_examples else 0))
    argv = [sys.executable, "-c", PROBE, MANIFEST]
    if design:
        ws.write_text(CONTRACT_SCRATCH, json.dumps({"routes": [r.probe() for r in design]}))
        argv.append(CONTRACT_SCRATCH)
    try:
        env = {"ORCHGPT_FUZZ_EXAMPLES": str(fuzz_examples), "ORCHGPT_FUZZ_TIMEOUT": str(fuzz.TIMEOUT_S)}
        result = await s.env.sandbox.run(argv, timeout_s=timeout, env=env)
    finally:
        if design:
            ws.resolve(CONTRACT_SCRATCH).unlink(missing_ok=True)
    line = next((ln for ln in reversed(result.stdout.splitlines()) if ln.startswith("ROUTE-REPORT ")), "")
    if not line:
        return (
            RouteCheck(
                False, "the route check did not finish", f"Checking the routes failed:\n{result.describe(4000)}"
            ),
            None,
            None,
        )
    report = json.loads(line[len("ROUTE-REPORT ") :])
    log_tail = str(report.get("log", ""))[-2000:]
    if not report.get("up"):
        how = (
            f"exited with code {report.get('exited')}"
            if report.get("exited") is not None
            else "did not listen on its port within the start-up time"
        )
        return (
            RouteCheck(
                False,
                f"the service {how}",
                f"The service started with `{report.get('command')}` {how}. Its output:\n"
                f"{log_tail}\nFix the code or the start command in {MANIFEST}.",
            ),
            None,
            None,
        )
    agreed = contract.judge(design, report.get("contract") or [], report.get("openapi")) if design else None
    fuzzed = fuzz.judge(report["fuzz"]) if fuzz_examples and "fuzz" in report else None
    return route_result(report, log_tail), agreed, fuzzed


def route_result(report: dict[str, Any], log_tail: str) -> RouteCheck:
    rows = report.get("routes", [])
    summary = ", ".join(f"{r['method']} {r['path']} {r.get('status')}" for r in rows)
    bad = [r for r in rows if not r.get("ok")]
    if not bad:
        return RouteCheck(True, summary, "")
    lines = "\n".join(
        f"- {r['method']} {r['path']}: expected {r.get('expected') or '< 400'}, got "
        f"{r.get('status') if r.get('status') is not None else r.get('error')}"
        for r in bad
    )
    return RouteCheck(
        False,
        summary,
        f"The tests pass, but these routes do not answer as declared in "
        f"{MANIFEST}:\n{lines}\nService output:\n{log_tail}\nFix the code or {MANIFEST}.",
    )
