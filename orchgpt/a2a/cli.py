"""`orchgpt a2a add NAME URL`: run a proxy agent that makes an external A2A agent the mesh
agent type NAME (docs/a2a.md). It runs in the foreground until SIGTERM/SIGINT, like agentd."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """\
The proxy connects to the mesh as the agent NAME: issue its certificate first,
  orchgpt certs issue NAME --role agent
Then `autogpt -c '/NAME run "hello"'` runs on the external agent.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("a2a", help="bring external A2A agents into the mesh")
    asub = p.add_subparsers(dest="a2a_cmd", metavar="{add}", required=True)
    a = asub.add_parser(
        "add",
        help="run a proxy agent: the A2A agent at URL becomes the mesh agent type NAME",
        description="Fetch the A2A agent card at URL, register the agent type NAME with its "
        "skills, and run every task of type NAME on that agent (streamed updates relayed as mesh "
        "events, "
        "INPUT_REQUIRED as an approval request).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("name", metavar="NAME", help="the mesh agent type (and agent certificate name)")
    a.add_argument("url", metavar="URL", help="the A2A agent's base URL (its card at URL/.well-known/...)")
    a.add_argument(
        "--ca-file",
        dest="ca_file",
        default="",
        help="CA certificate to verify the A2A agent's TLS (default: the system's)",
    )
    a.add_argument(
        "--client-cert",
        dest="client_cert",
        default="",
        help="client certificate for an A2A agent that asks for mutual TLS",
    )
    a.add_argument("--client-key", dest="client_key", default="")
    a.add_argument(
        "--auth-env",
        dest="auth_env",
        default="",
        metavar="VAR",
        help="environment variable with a bearer token for the A2A agent (never logged)",
    )
    a.add_argument(
        "--address",
        default=None,
        help="orchgpt HOST:PORT (default: ORCHGPT_ADDRESS or 127.0.0.1:8443)",
    )
    a.add_argument(
        "--certs",
        default=None,
        help="mesh certificate directory (default: ORCHGPT_CERTS or ./certs)",
    )
    a.add_argument("--workdir", default="a2a-proxy", help="task workspaces and the results journal")
    a.add_argument(
        "--log-level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    a.add_argument("--log-format", dest="log_format", default="json", choices=["json", "console"])


def run(args: argparse.Namespace) -> int:
    """The proxy is an agent: it runs as `python -m agentd.a2a_proxy` (the daemon's package
    never imports the agent package), with the arguments given here. It replaces this process
    (exec), so that a SIGTERM to `orchgpt a2a add` stops the proxy itself rather than leaving it
    running without its parent."""
    import os
    import sys

    del args  # parsed here for --help and errors; the proxy parses the same words again
    words = sys.argv[1:]
    start = words.index("a2a") + 1
    argv = words[start + 1 :] if words[start : start + 1] == ["add"] else words[start:]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "agentd.a2a_proxy", *argv])
