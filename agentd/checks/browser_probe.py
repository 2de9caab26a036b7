"""The browser probe: runs INSIDE the task's sandbox as ``python -c <this file's text> SPEC``.

It starts the backend (the manifest's ``start``) when there is one, serves the UI's folder over
HTTP on loopback, loads ``index.html`` in headless Chromium (Playwright driving the system's
Chromium), and prints one line ``BROWSER-REPORT {json}``: console errors, uncaught exceptions,
every API call the page made (fetch/XHR) with its status, failed requests, the page's title and
text size, and where the screenshot went. Requests the page makes to any other loopback origin
(``http://localhost:8000`` as API_BASE, say), and same-origin requests for paths that are not
files of the UI (``fetch("/todos")``), are answered by the backend, so the page is judged
against the service the backend agent built, whatever port the model assumed.

Standard library and Playwright only: it must not import agentd (the sandbox runs it alone).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Any


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def start_backend(spec: dict[str, Any], report: dict[str, Any]) -> tuple[subprocess.Popen[bytes] | None, int | None]:
    if not spec.get("start"):
        return None, None
    port = free_port()
    cmd = str(spec["start"]).replace("{port}", str(port)).replace("$PORT", str(port))
    log = tempfile.TemporaryFile()
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1")
    p = subprocess.Popen(
        cmd,
        shell=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + float(spec.get("startup_s", 15))
    while time.monotonic() < deadline and p.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            report["backend"] = f"started on port {port}"
            return p, port
        except OSError:
            time.sleep(0.1)
    report["backend"] = "did not start: " + (cmd if p.poll() is None else f"exited {p.returncode}")
    return p, None


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(folder: str) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(Quiet, directory=folder)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    report: dict[str, Any] = {
        "console_errors": [],
        "page_errors": [],
        "api": [],
        "failed": [],
        "backend": "none",
    }
    proc, bport = start_backend(spec, report)
    srv = serve(spec["dir"])
    port = srv.server_address[1]
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=spec["chromium"],
                timeout=30000,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
            page = browser.new_page()

            def console(msg: Any) -> None:
                if msg.type == "error":
                    report["console_errors"].append(msg.text[:300])

            def response(r: Any) -> None:
                if r.request.resource_type in ("fetch", "xhr"):
                    path = urllib.parse.urlsplit(r.url).path
                    report["api"].append({"method": r.request.method, "path": path, "status": r.status})

            def failed(r: Any) -> None:
                report["failed"].append(f"{r.method} {urllib.parse.urlsplit(r.url).path}: {r.failure}")

            def is_file(path: str) -> bool:
                full = os.path.realpath(os.path.join(spec["dir"], urllib.parse.unquote(path).lstrip("/")))
                inside = full.startswith(os.path.realpath(spec["dir"]) + os.sep)
                return (inside and os.path.isfile(full)) or path in ("", "/")

            def reroute(route: Any) -> Any:
                u = urllib.parse.urlsplit(route.request.url)
                if bport is None or (u.port == port and is_file(u.path)):
                    return route.continue_()  # the UI's own files (same-origin API calls: the backend)
                target = u._replace(netloc=f"127.0.0.1:{bport}").geturl()
                return route.continue_(url=target)

            page.on("console", console)
            page.on("pageerror", lambda e: report["page_errors"].append(str(e)[:300]))
            page.on("response", response)
            page.on("requestfailed", failed)
            page.route("http://localhost*/**", reroute)
            page.route("http://127.0.0.1*/**", reroute)
            page.goto(f"http://127.0.0.1:{port}/index.html", wait_until="load", timeout=20000)
            try:
                page.wait_for_load_state("networkidle", timeout=5000)
            except Exception:
                report["note"] = "the page was still busy on the network after 5 s"
            page.screenshot(path=spec["screenshot"], full_page=True)
            report["title"] = page.title()
            report["text_chars"] = len(page.inner_text("body") or "")
            report["screenshot"] = spec["screenshot"]
            browser.close()
        report["loaded"] = True
    except Exception as exc:
        report["loaded"] = False
        report["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        srv.shutdown()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 9)
    print("BROWSER-REPORT " + json.dumps(report))


if __name__ == "__main__":  # python -c sets it too
    main()
