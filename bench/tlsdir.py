"""Certificates for a benchmark run, made with orchgpt.certs in a temporary directory.

The relay (baseline) and the daemon use the same CA, the same server
certificate and the same agent and client certificates, so the TLS cost is
the same on both sides.
"""

from __future__ import annotations

from pathlib import Path

from orchgpt.certs import CA, CertPaths, init_dir, paths_for

CLIENT_NAME = "cli"  # the client certificate init_dir makes (role client)


def make_certs(directory: Path, agents: list[str] | tuple[str, ...] = ()) -> Path:
    """Create the CA, server and client certificates plus one agent certificate per name."""
    init_dir(directory)
    issue_agents(directory, agents)
    return directory


def issue_agents(directory: Path, names: list[str] | tuple[str, ...]) -> list[CertPaths]:
    ca = CA.load(directory)
    out = []
    for name in names:
        p = paths_for(directory, name)
        if not p.cert.exists():
            ca.issue_to(directory, name, "agent")
        out.append(p)
    return out


def server_paths(directory: Path) -> CertPaths:
    return paths_for(directory, "server")


def client_paths(directory: Path) -> CertPaths:
    return paths_for(directory, CLIENT_NAME)
