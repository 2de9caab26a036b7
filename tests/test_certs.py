"""`orchgpt certs`: a CA that is never silently replaced, 0600 keys, identities in the subject."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchgpt.certs import CA, identity_from_pem, init_dir
from orchgpt.errors import CertError


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchgpt", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_init_writes_ca_server_and_cli_with_private_keys_0600(tmp_path: Path) -> None:
    r = run("certs", "init", "--host", "mesh.example", "--host", "10.1.2.3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = tmp_path / "certs"
    for name in ("ca", "server", "cli"):
        assert (d / f"{name}.pem").is_file()
        mode = stat.S_IMODE((d / f"{name}-key.pem").stat().st_mode)
        assert mode == 0o600, f"{name}-key.pem has mode {oct(mode)}"
    assert identity_from_pem((d / "server.pem").read_bytes()).role == "server"
    cli = identity_from_pem((d / "cli.pem").read_bytes())
    assert (cli.name, cli.role) == ("cli", "client")
    from cryptography import x509

    sans = (
        x509.load_pem_x509_certificate((d / "server.pem").read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)} | {
        str(v) for v in sans.get_values_for_type(x509.IPAddress)
    }
    assert {"localhost", "127.0.0.1", "::1", "mesh.example", "10.1.2.3"} <= names


def test_init_again_never_replaces_the_ca(tmp_path: Path) -> None:
    assert run("certs", "init", cwd=tmp_path).returncode == 0
    ca_before = (tmp_path / "certs" / "ca.pem").read_bytes()
    key_before = (tmp_path / "certs" / "ca-key.pem").read_bytes()
    r = run("certs", "init", "--force", cwd=tmp_path)
    assert r.returncode == 0
    assert "kept" in r.stdout and "ca.pem" in r.stdout
    assert (tmp_path / "certs" / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "certs" / "ca-key.pem").read_bytes() == key_before


def test_issue_agent_and_client_certificates(tmp_path: Path) -> None:
    init_dir(tmp_path / "certs")
    r = run("certs", "issue", "builder-1", "--role", "agent", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ident = identity_from_pem((tmp_path / "certs" / "builder-1.pem").read_bytes())
    assert (ident.name, ident.role) == ("builder-1", "agent")
    assert stat.S_IMODE((tmp_path / "certs" / "builder-1-key.pem").stat().st_mode) == 0o600
    r = run("certs", "issue", "alice", "--role", "client", cwd=tmp_path)
    assert r.returncode == 0
    assert identity_from_pem((tmp_path / "certs" / "alice.pem").read_bytes()).role == "client"
    # again without --force: refused, the file kept
    before = (tmp_path / "certs" / "alice.pem").read_bytes()
    r = run("certs", "issue", "alice", "--role", "client", cwd=tmp_path)
    assert r.returncode == 1 and "exists" in r.stderr
    assert (tmp_path / "certs" / "alice.pem").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certs", "issue", "bad name", "--role", "agent"], "invalid certificate name"),
        (["certs", "issue", "local-echo-1", "--role", "agent"], "reserved"),
        (["certs", "issue", "x", "--role", "admin"], "invalid choice"),
    ],
)
def test_issue_rejects_bad_input_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    init_dir(tmp_path / "certs")
    r = run(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_issue_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    r = run("certs", "issue", "a1", "--role", "agent", "--dir", "nowhere", cwd=tmp_path)
    assert r.returncode == 1
    assert "orchgpt certs init" in r.stderr


def test_identity_requires_a_role(tmp_path: Path) -> None:
    ca = CA.create()
    cert_pem, _ = ca.issue("n1", "agent")
    assert identity_from_pem(cert_pem).name == "n1"
    with pytest.raises(CertError):
        identity_from_pem(ca.cert_pem)  # the CA has no role
