"""The sandbox for generated code, with real subprocesses and real namespaces.

Each test states what it needs; a test that needs isolation the machine cannot
give is skipped with the reason (`detect_isolation` says which).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentd.sandbox import Isolation, Limits, Sandbox, clean_env, detect_isolation

SECRET = "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-AGENT-KEY\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nAGENT-CERT-BODY\n-----END CERTIFICATE-----\n"


@pytest.fixture
async def iso() -> Isolation:
    return await detect_isolation()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An agent's certificate dir and a workspace root with two task workspaces."""
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)
    key = certs / "backend-key.pem"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)  # as orchgpt.certs.write_private does
    os.write(fd, SECRET.encode())
    os.close(fd)
    cert = certs / "backend.pem"
    cert.write_text(CERT)
    cert.chmod(0o644)
    root = tmp_path / "workspaces"
    ws = root / "task1"
    other = root / "task2"
    ws.mkdir(parents=True)
    other.mkdir()
    (other / "app.py").write_text("print('other task')\n")
    return {"certs": certs, "key": key, "cert": cert, "root": root, "ws": ws, "other": other}


def sandbox(layout: dict[str, Path], **limits: float) -> Sandbox:
    return Sandbox(layout["ws"], Limits(**limits), hide=[layout["certs"]])  # type: ignore[arg-type]


async def test_isolation_is_detected_and_reported(iso: Isolation, layout: dict[str, Path]) -> None:
    r = await sandbox(layout).run("echo hello")
    assert r.ok and r.stdout == "hello\n"
    assert r.network_isolated == iso.network
    if iso.mode == "none":
        assert any("network not isolated" in n for n in r.notes), r.notes
    if os.geteuid() == 0 and iso.mode == "root-ns":
        assert r.uid_dropped and not r.notes
        assert (await sandbox(layout).run("id -u")).stdout.strip() != "0"


async def test_cannot_read_the_agents_key_or_certificate(iso: Isolation, layout: dict[str, Path]) -> None:
    key, cert = layout["key"], layout["cert"]
    r = await sandbox(layout).run(f"cat {key}")
    if not r.uid_dropped and not iso.mounts:
        assert any("readable by path" in n for n in r.notes), r.notes  # said clearly, at least
        pytest.skip(f"no mount namespace and no uid switch here: {r.isolation_note}")
    assert r.exit_code != 0, r.stdout
    assert "TOP-SECRET" not in r.stdout + r.stderr
    # Not through /proc of the agent process either.
    r = await sandbox(layout).run(f"cat /proc/{os.getpid()}/root{key}")
    assert r.exit_code != 0 and "TOP-SECRET" not in r.stdout
    # The certificate is world-readable on disk, so only the mount namespace hides it.
    if not iso.mounts:
        pytest.skip(f"no mount namespace ({iso.reason}): a 0644 certificate stays readable")
    r = await sandbox(layout).run(f"cat {cert}; ls -la {layout['certs']}")
    assert "AGENT-CERT-BODY" not in r.stdout, r.stdout
    assert "backend-key.pem" not in r.stdout
    # The agent itself still reads both.
    assert key.read_text() == SECRET and cert.read_text() == CERT


async def test_cannot_write_outside_its_workspace(iso: Isolation, layout: dict[str, Path]) -> None:
    root, other = layout["root"], layout["other"]
    marker = f"/tmp/orchgpt-sbx-{uuid.uuid4().hex}"
    script = "; ".join(
        [
            "echo inside > inside.txt",
            f"echo x > {root}/escaped.txt",
            f"echo x > {other}/app.py",
            f"echo x > {layout['certs']}/backend-key.pem",
            f"echo x > {marker}",
            "echo x > ../escaped2.txt",
            "true",
        ]
    )
    r = await sandbox(layout).run(script)
    assert (layout["ws"] / "inside.txt").read_text() == "inside\n"
    if not r.uid_dropped and not iso.mounts:
        pytest.skip("neither a uid switch nor a mount namespace is available here")
    assert not (root / "escaped.txt").exists()
    assert not (root / "escaped2.txt").exists()
    assert (other / "app.py").read_text() == "print('other task')\n"
    assert layout["key"].read_text() == SECRET
    assert "Permission denied" in r.stderr or "No such file" in r.stderr or "Read-only" in r.stderr
    if iso.mounts:
        assert not os.path.exists(marker), "the sandbox's /tmp must be private"


async def test_killed_at_time_limit_with_its_children(layout: dict[str, Path]) -> None:
    ws = layout["ws"]
    started = time.monotonic()
    r = await sandbox(layout, timeout_s=1).run("(sleep 1.5; echo late > late.txt) & sleep 30")
    took = time.monotonic() - started
    assert r.timed_out and not r.ok
    assert "killed at time limit 1s" in r.notes
    assert "killed at time limit 1s" in r.describe()
    assert took < 4, took
    await asyncio.sleep(1.0)  # the background child would have written by now
    assert not (ws / "late.txt").exists(), "a child of the command survived the time limit"


async def test_cannot_reach_the_network(iso: Isolation, layout: dict[str, Path]) -> None:
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # Control: the listener works from the agent's side.
        _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        w.write(b"control")
        await w.drain()
        w.close()
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == [b"control"]
        if not iso.network:
            pytest.skip(f"network isolation is not available here: {iso.reason}")
        code = (
            "import socket\n"
            "try:\n"
            f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    s.sendall(b'escaped'); print('CONNECTED')\n"
            "except OSError as e:\n"
            "    print('BLOCKED', e)\n"
        )
        r = await sandbox(layout).run([sys.executable, "-c", code])
        assert r.exit_code == 0, r.stderr
        assert "BLOCKED" in r.stdout and "CONNECTED" not in r.stdout
        await asyncio.sleep(0.2)
        assert got == [b"control"], "the sandbox reached the agent's loopback"
        assert r.network_isolated
    finally:
        server.close()
        await server.wait_closed()


async def test_environment_is_clean(layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-must-not-leak")
    monkeypatch.setenv("ORCHGPT_CERTS", str(layout["certs"]))
    monkeypatch.setenv("SSL_CERT_FILE", str(layout["cert"]))
    r = await sandbox(layout).run("env")
    assert r.ok
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert "sk-test" not in r.stdout and "OPENAI_API_KEY" not in env
    assert not [k for k in env if k.startswith("ORCHGPT")]
    assert "SSL_CERT_FILE" not in env
    assert env["HOME"] == str(layout["ws"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    expected = set(clean_env(layout["ws"])) | {"PWD", "SHLVL", "_"}
    assert set(env) <= expected, set(env) - expected
    # stdin is at EOF, cwd is the workspace
    r = await sandbox(layout).run("cat; pwd")
    assert r.ok and r.stdout.strip() == str(layout["ws"])


async def test_file_size_memory_and_output_limits(layout: dict[str, Path]) -> None:
    sb = Sandbox(layout["ws"], Limits(file_size_mb=1, memory_mb=256, output_bytes=4000))
    r = await sb.run([sys.executable, "-c", "open('big.bin', 'wb').write(b'x' * 3_000_000)"])
    assert r.exit_code != 0
    assert "File too large" in r.stderr
    assert (layout["ws"] / "big.bin").stat().st_size <= 1024 * 1024
    assert any("file size limit 1 MB" in n for n in r.notes)

    r = await sb.run([sys.executable, "-c", "b = bytearray(600 * 1024 * 1024); print('allocated')"])
    assert r.exit_code != 0 and "allocated" not in r.stdout
    assert "MemoryError" in r.stderr

    r = await sb.run("seq 1 100000")
    assert r.ok and r.truncated
    assert r.stdout.startswith("1\n2\n") and r.stdout.rstrip().endswith("100000")
    assert len(r.stdout) < 4200 and "bytes of output cut" in r.stdout


async def test_exit_code_and_missing_command(layout: dict[str, Path]) -> None:
    r = await sandbox(layout).run("echo oops >&2; exit 3")
    assert r.exit_code == 3 and r.stderr == "oops\n" and not r.timed_out
    assert "exit code 3" in r.describe()
    r = await sandbox(layout).run(["no-such-program-xyz"])
    assert r.exit_code == 127 and "cannot run no-such-program-xyz" in r.stderr


async def test_python_toolchain_and_pytest_work(layout: dict[str, Path]) -> None:
    ws = layout["ws"]
    (ws / "test_ok.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    r = await sandbox(layout, timeout_s=30).run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    # The agent can still read and write what the sandbox left behind.
    (ws / "after.txt").write_text("agent")
    assert (ws / "after.txt").read_text() == "agent"


async def test_protected_paths_stay_hidden_inside_the_workspace(iso: Isolation, layout: dict[str, Path]) -> None:
    """Protection works by mount, not only by location: protected paths inside the
    workspace itself (a tree the sandbox otherwise sees) are covered too."""
    if not iso.mounts:
        pytest.skip(f"no mount namespace here: {iso.reason}")
    ws = layout["ws"]
    (ws / "secrets").mkdir()
    (ws / "secrets" / "token.txt").write_text("TOP-SECRET-TOKEN")
    (ws / "agent-key.pem").write_text(SECRET)
    (ws / "agent-key.pem").chmod(0o644)
    sb = Sandbox(ws, Limits(), hide=[ws / "secrets", ws / "agent-key.pem"])
    r = await sb.run("cat secrets/token.txt; cat agent-key.pem; echo visible > ok.txt; cat ok.txt")
    assert "TOP-SECRET" not in r.stdout, r.stdout
    assert "visible" in r.stdout
    assert (ws / "secrets" / "token.txt").read_text() == "TOP-SECRET-TOKEN"
    assert (ws / "agent-key.pem").read_text() == SECRET
