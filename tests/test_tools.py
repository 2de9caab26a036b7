"""Workspaces and tools: files inside the workspace only, the sandbox, fetch on and off."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentd.errors import ToolError
from agentd.sandbox import Limits, Sandbox
from agentd.tools import FETCH_LIMIT, Toolbox, ToolEnv
from agentd.workspace import Workspace, artifact_kind, task_workspace, workspace_id
from orchgpt.models import Task


def make_env(ws: Path, allow_fetch: bool = True) -> ToolEnv:
    settings = SimpleNamespace(allow_fetch=allow_fetch, sandbox_timeout_s=10, sandbox_memory_mb=512)
    return ToolEnv(Workspace(ws), Sandbox(ws, Limits(timeout_s=10, memory_mb=512)), settings)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    d = tmp_path / "root" / "t1"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def web() -> Iterator[str]:
    """A real HTTP server: / answers a small page, /big more than the fetch limit."""

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b"hello from the web" if self.path == "/" else b"x" * (FETCH_LIMIT * 2)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


async def test_write_read_list(ws: Path) -> None:
    box = Toolbox(make_env(ws))
    out, ok = await box.call("write_file", {"path": "pkg/app.py", "content": "print('hi')\n"})
    assert ok and "wrote pkg/app.py (12 bytes)" in out
    assert (ws / "pkg" / "app.py").read_text() == "print('hi')\n"
    out, ok = await box.call("read_file", {"path": "pkg/app.py"})
    assert ok and out == "print('hi')\n"
    (ws / "README.md").write_text("# r\n")
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "x.pyc").write_bytes(b"\0")
    out, ok = await box.call("list_files", {})
    assert ok and out.splitlines() == ["README.md\t4", "pkg/app.py\t12"]
    out, ok = await box.call("list_files", {"path": "pkg"})
    assert ok and out == "pkg/app.py\t12"
    out, ok = await box.call("read_file", {"path": "missing.txt"})
    assert not ok and out == "error: no such file: missing.txt"


@pytest.mark.parametrize(
    "path, reason",
    [
        ("../escape.txt", "'..' is not allowed"),
        ("a/../../escape.txt", "'..' is not allowed"),
        ("/etc/passwd", "is absolute"),
        ("~/x", "is absolute"),
        ("", "a path is required"),
        ("link/secret.txt", "outside the workspace through a symbolic link"),
        ("direct", "outside the workspace through a symbolic link"),
    ],
)
async def test_path_escapes_are_refused(ws: Path, path: str, reason: str) -> None:
    outside = ws.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, ws / "link")
    os.symlink(outside / "secret.txt", ws / "direct")
    box = Toolbox(make_env(ws))
    for tool, args in (("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"})):
        out, ok = await box.call(tool, args)
        assert not ok and out.startswith("error: ") and reason in out, out
    assert (outside / "secret.txt").read_text() == "secret"
    assert not (ws.parent / "escape.txt").exists()


async def test_symlink_inside_the_workspace_is_fine(ws: Path) -> None:
    (ws / "real.txt").write_text("data")
    os.symlink("real.txt", ws / "alias.txt")
    out, ok = await Toolbox(make_env(ws)).call("read_file", {"path": "alias.txt"})
    assert ok and out == "data"


def test_writes_never_follow_a_swapped_symlink(ws: Path) -> None:
    """A directory replaced by a symlink after the check is still not followed."""
    outside = ws.parent / "outside"
    outside.mkdir()
    w = Workspace(ws)
    (ws / "sub").mkdir()
    w.resolve("sub/f.txt")  # checked while sub is a real directory
    (ws / "sub").rmdir()
    os.symlink(outside, ws / "sub")
    with pytest.raises(ToolError):
        w._open("sub/f.txt", os.O_WRONLY | os.O_CREAT)  # the race: open after the swap
    assert not (outside / "f.txt").exists()


async def test_run_command_in_the_sandbox(ws: Path) -> None:
    env = make_env(ws)
    box = Toolbox(env)
    await box.call("write_file", {"path": "t.py", "content": "import sys; print('out'); sys.exit(4)"})
    out, ok = await box.call("run_command", {"command": "python t.py"})
    assert ok  # the tool worked; the command's own failure is in the text
    assert "exit code 4" in out and "out" in out
    assert env.runs[-1].exit_code == 4
    out, ok = await box.call("run_command", {"command": "sleep 5", "timeout_s": 0.5})
    assert ok and "killed at time limit 0.5s" in out


async def test_fetch_disabled_is_refused(ws: Path, web: str) -> None:
    box = Toolbox(make_env(ws, allow_fetch=False))
    assert "fetch_url" not in [s.name for s in box.specs()]
    out, ok = await box.call("fetch_url", {"url": web + "/"})
    assert not ok and "fetching URLs is disabled" in out


async def test_fetch_bounded(ws: Path, web: str) -> None:
    box = Toolbox(make_env(ws))
    assert "fetch_url" in [s.name for s in box.specs()]
    out, ok = await asyncio.wait_for(box.call("fetch_url", {"url": web + "/"}), 20)
    assert ok and out.startswith("HTTP 200 text/plain") and "hello from the web" in out
    out, ok = await asyncio.wait_for(box.call("fetch_url", {"url": web + "/big"}), 20)
    assert ok and f"cut at {FETCH_LIMIT} bytes" in out and len(out) < FETCH_LIMIT + 200
    out, ok = await box.call("fetch_url", {"url": "file:///etc/passwd"})
    assert not ok and "only http and https" in out
    out, ok = await box.call("fetch_url", {"url": "http://127.0.0.1:1/"})
    assert not ok and "failed" in out


async def test_unknown_tool_and_bad_arguments(ws: Path) -> None:
    box = Toolbox(make_env(ws), ["read_file"])
    out, ok = await box.call("rm_rf", {})
    assert not ok and "unknown tool 'rm_rf'" in out
    out, ok = await box.call("read_file", {"path": 3})
    assert not ok and "must be a string" in out
    with pytest.raises(KeyError):
        Toolbox(make_env(ws), ["nope"])


def test_task_workspaces_and_artifacts(tmp_path: Path) -> None:
    root = tmp_path / "wsroot"
    parent = Task(task_id="parent1", agent_type="manager")
    child = Task(task_id="child1", agent_type="backend", options={"workspace": "parent1"})
    p = task_workspace(root, parent)
    c = task_workspace(root, child)
    assert p == c == (root / "parent1").resolve()
    assert p.stat().st_mode & 0o777 == 0o700 and root.stat().st_mode & 0o777 == 0o711
    assert task_workspace(root, Task(task_id="solo", agent_type="x")).name == "solo"
    with pytest.raises(ToolError, match="invalid workspace name"):
        workspace_id(Task(task_id="t", agent_type="x", options={"workspace": "../etc"}))
    w = Workspace(p)
    w.write_text("app/main.py", "x = 1\n")
    w.write_text("tests/test_main.py", "def test(): pass\n")
    w.write_text("ARCHITECTURE.md", "# A\n")
    arts = {a.path: a for a in w.artifacts()}
    assert set(arts) == {"app/main.py", "tests/test_main.py", "ARCHITECTURE.md"}
    assert arts["app/main.py"].size == 6
    assert arts["app/main.py"].sha256 == hashlib.sha256(b"x = 1\n").hexdigest()
    assert [arts[k].kind for k in sorted(arts)] == ["document", "code", "test"]
    assert artifact_kind("architecture.mmd") == "diagram"


async def test_missing_isolation_is_reported_once_as_an_event(ws: Path) -> None:
    from agentd.runtime import TaskContext
    from agentd.sandbox import Isolation, SandboxPolicy
    from orchgpt.models import EventKind, TaskEvent

    events: list[TaskEvent] = []
    ctx = TaskContext(Task(task_id="t1", agent_type="backend"), ws, "a1", events.append)
    sb = Sandbox(
        ws,
        Limits(timeout_s=10),
        isolation=Isolation("none", "no namespaces on this test machine"),
        policy=SandboxPolicy(allow_weak=True),
    )
    box = Toolbox(ToolEnv(Workspace(ws), sb, None, ctx), ["run_command"])
    for _ in range(2):
        out, ok = await box.call("run_command", {"command": "echo hi"})
        assert ok and "network not isolated (no namespaces on this test machine)" in out
    logs = [e.text for e in events if e.kind == EventKind.LOG]
    assert len(logs) == 1 and logs[0].startswith("sandbox isolation limited: ")
    assert "network not isolated" in logs[0]
