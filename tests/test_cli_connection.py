"""The one-shot CLI's connection problems: unreachable or malformed addresses, another CA's or
missing certificates (exit 3), and --help/--version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.certs import init_dir
from tests.support import cli_oneshot
from tests.support.cli_oneshot import cli, env_for, free_port
from tests.support.mesh import Daemon

# The shared fixture (pytest finds a fixture by its name in the test's module).
mesh = cli_oneshot.mesh


def test_unreachable_daemon_exits_3(mesh: Daemon) -> None:
    r = cli(mesh, "--orchestrator", f"127.0.0.1:{free_port()}", "-c", "/echo run hi")
    assert r.returncode == 3
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("autogpt: cannot reach orchgpt at 127.0.0.1:"), r.stderr


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nonsense", "autogpt: malformed address 'nonsense': expected HOST:PORT, e.g. 127.0.0.1:8443"),
        ("host:http", "autogpt: malformed address 'host:http': port 'http' is not a number"),
        ("127.0.0.1:70000", "autogpt: malformed address '127.0.0.1:70000': port 70000 is out of range 0-65535"),
    ],
)
def test_malformed_address_exits_3(mesh: Daemon, address: str, message: str) -> None:
    r = cli(mesh, "-c", "/echo run hi", env=env_for(mesh, ORCHGPT_ADDRESS=address))
    assert (r.returncode, r.stderr.splitlines()) == (3, [message])


def test_orchestrator_address_alias_is_read(mesh: Daemon) -> None:
    env = env_for(mesh)
    del env["ORCHGPT_ADDRESS"]
    env["ORCHESTRATOR_ADDRESS"] = mesh.address
    r = cli(mesh, "-c", "/echo run via alias", env=env)
    assert r.returncode == 0, r.stderr
    assert "via alias" in r.stdout.splitlines()


def test_certificate_from_another_ca_is_refused(mesh: Daemon, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_dir(other)
    # our client certificate is not signed by the mesh CA (we trust the right CA)
    r = cli(
        mesh,
        "--ca",
        str(mesh.certs / "ca.pem"),
        "--cert",
        str(other / "cli.pem"),
        "--key",
        str(other / "cli-key.pem"),
        "-c",
        "/echo run hi",
    )
    assert r.returncode == 3
    err = r.stderr.splitlines()
    assert len(err) == 1 and "refused the TLS handshake" in err[0], r.stderr
    # the whole directory from another mesh: the server is not trusted either
    r = cli(mesh, "--certs", str(other), "-c", "/echo run hi")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1 and "TLS handshake" in r.stderr


def test_missing_certificates_exit_3(mesh: Daemon, tmp_path: Path) -> None:
    r = cli(mesh, "--certs", str(tmp_path / "nowhere"), "-c", "/echo run hi")
    assert r.returncode == 3
    assert r.stderr.splitlines() == [
        f"autogpt: CA certificate not found: {tmp_path / 'nowhere' / 'ca.pem'} "
        "(create certificates with `orchgpt certs init`)"
    ]


def test_help_and_version() -> None:
    r = subprocess.run([sys.executable, "-m", "orchgpt_cli", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for text in (
        "exit codes:",
        "2  usage error",
        "3  connection problem",
        "--orchestrator HOST:PORT",
        "ORCHESTRATOR_ADDRESS",
        '"type": "event"',
        "--approve",
        "--yes",
    ):
        assert text in r.stdout
    r = subprocess.run([sys.executable, "-m", "orchgpt_cli", "--version"], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, "autogpt 0.1.0")
    r = subprocess.run(
        [sys.executable, "-m", "orchgpt_cli", "--frobnicate"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr
