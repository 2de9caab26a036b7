"""The `orchgpt` command: `serve` the mesh, and manage its `certs`."""

from __future__ import annotations

import os

# grpc core's own INFO lines (e.g. about fork) are not structured: keep only its errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import OrchgptError

EXIT_USAGE = 2


def _serve_parser(sub: Any) -> None:
    from .config import describe_settings

    epilog = ["settings (flag, environment variable, description):"]
    for name, env, desc in describe_settings():
        epilog.append(f"  --{name.replace('_', '-'):22} {env:28} {desc}")
    epilog.append("Precedence: flags over environment over the TOML file (--config or ORCHGPT_CONFIG).")
    epilog.append("ORCHGPT_ADDRESS is read as the listen address when ORCHGPT_LISTEN is not set.")
    p = sub.add_parser(
        "serve",
        help="run the orchestrator daemon",
        description="Run the orchgpt daemon: mutual-TLS gRPC mesh of agents.",
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8443; 0.0.0.0:8443 for remote agents)")
    p.add_argument("--certs", help="certificate directory (default ./certs)")
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--data-dir", dest="data_dir", help="data directory (store, agent certificates, workspaces)")
    p.add_argument("--store", help="store URL: sqlite:///PATH or a PATH, postgresql://USER@HOST:PORT/DB, or memory:")
    p.add_argument("--workspace-root", dest="workspace_root")
    p.add_argument("--workflows-dir", dest="workflows_dir", help="workflow definitions (TOML files)")
    p.add_argument("--max-local-agents", dest="max_local_agents", type=int)
    p.add_argument(
        "--max-agent-concurrency",
        dest="max_agent_concurrency",
        type=int,
        help="most tasks an agent runs at once (default 64)",
    )
    p.add_argument(
        "--local-agent-concurrency",
        dest="local_agent_concurrency",
        type=int,
        help="tasks each spawned agent runs at once (default 1)",
    )
    p.add_argument(
        "--spawn-deadline",
        dest="spawn_deadline",
        type=float,
        help="seconds a spawned agent has to register (default 30)",
    )
    p.add_argument(
        "--local-idle-timeout",
        dest="local_idle_timeout",
        type=float,
        help="seconds before an idle spawned agent is stopped (default 300)",
    )
    p.add_argument(
        "--no-spawn",
        dest="spawn",
        action="store_const",
        const=False,
        help="never spawn local agents (only agents started by hand)",
    )
    p.add_argument(
        "--cluster",
        dest="cluster",
        action="store_const",
        const=True,
        help="share the PostgreSQL store with other daemons as one mesh (docs/scaling.md)",
    )
    p.add_argument(
        "--cluster-message-ttl",
        dest="cluster_message_ttl",
        type=float,
        help="cluster: seconds a message waits for an agent of another daemon before its sender gets an ERROR",
    )
    p.add_argument(
        "--agent-types",
        dest="agent_types",
        help="built-in agent types, comma-separated (default: ask `agentd --list-types`)",
    )
    p.add_argument(
        "--agents-dir",
        dest="agents_dir",
        help="declared agent types, one TOML file each (default: agents.d/ beside --config "
        "and in the data dir; docs/agents.md)",
    )
    p.add_argument("--heartbeat-interval", dest="heartbeat_interval", type=float)
    p.add_argument("--heartbeat-misses", dest="heartbeat_misses", type=int)
    p.add_argument("--max-attempts", dest="max_attempts", type=int)
    p.add_argument("--grace-period", dest="grace_period", type=float)
    p.add_argument("--reconnect-grace", dest="reconnect_grace", type=float)
    p.add_argument("--max-message-bytes", dest="max_message_bytes", type=int)
    p.add_argument("--max-pending-events", dest="max_pending_events", type=int)
    p.add_argument("--max-stream-queue-bytes", dest="max_stream_queue_bytes", type=int)
    p.add_argument("--agent-messages-per-second", dest="agent_messages_per_second", type=float)
    p.add_argument("--agent-message-burst", dest="agent_message_burst", type=int)
    p.add_argument("--max-events-per-task", dest="max_events_per_task", type=int)
    p.add_argument("--max-task-input-bytes", dest="max_task_input_bytes", type=int)
    p.add_argument("--list-page-bytes", dest="list_page_bytes", type=int)
    p.add_argument("--list-field-bytes", dest="list_field_bytes", type=int)
    p.add_argument("--crl-poll-interval", dest="crl_poll_interval", type=float)
    p.add_argument(
        "--commit-window-ms",
        dest="commit_window_ms",
        type=float,
        help="group commit: longest ms a write waits for its commit (0: a commit per write)",
    )
    p.add_argument(
        "--schedule-poll-interval",
        dest="schedule_poll_interval",
        type=float,
        help="longest scheduler sleep (s): how soon another daemon's new schedule is seen",
    )
    p.add_argument(
        "--a2a-listen",
        dest="a2a_listen",
        metavar="HOST:PORT",
        help="serve every agent type as an A2A agent (JSON-RPC + SSE over mutual TLS; off by default)",
    )
    p.add_argument(
        "--a2a-grpc",
        dest="a2a_grpc",
        action="store_const",
        const=True,
        help="serve A2A's gRPC A2AService on the mesh's mutual-TLS port (off by default)",
    )
    p.add_argument(
        "--a2a-push",
        dest="a2a_push",
        choices=["off", "public", "any"],
        help="A2A push notifications to webhooks: off (default), public addresses only, any",
    )
    p.add_argument(
        "--a2a-agents",
        dest="a2a_agent",
        action="append",
        metavar="NAME=URL",
        help="run a proxy for the external A2A agent at URL as agent type NAME (repeatable)",
    )
    p.add_argument(
        "--a2a-agent-auth",
        dest="a2a_agent_auth",
        action="append",
        metavar="NAME=VAR",
        help="the proxy of the A2A agent NAME sends the token in the environment "
        "variable VAR (repeatable; the token is never logged)",
    )
    p.add_argument(
        "--a2a-agents-ca", dest="a2a_agents_ca", metavar="FILE", help="CA file to verify the external A2A agents' TLS"
    )
    p.add_argument("--a2a-public-host", dest="a2a_public_host", help="host name in the A2A agent cards")
    p.add_argument(
        "--metrics-listen",
        dest="metrics_listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP, no auth; "
        "off by default; docs/operations.md)",
    )
    p.add_argument(
        "--otlp-endpoint",
        dest="otlp_endpoint",
        metavar="URL",
        help="export OpenTelemetry traces over OTLP/HTTP to URL (e.g. http://127.0.0.1:4318; "
        "or set OTEL_EXPORTER_OTLP_ENDPOINT; off by default; docs/operations.md)",
    )
    p.add_argument("--local-model", dest="local_model", choices=["auto", "on", "off"])
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", dest="log_format", choices=["json", "console"])
    p.add_argument("--port-file", help="write the bound port to this file once serving (useful with port 0)")
    p.add_argument(
        "--metrics-port-file", help="write the metrics endpoint's bound port to this file (before --port-file)"
    )


def _certs_parser(sub: Any) -> None:
    p = sub.add_parser("certs", help="create the mesh CA and issue certificates")
    csub = p.add_subparsers(dest="certs_cmd", metavar="{init,issue,revoke,renew}", required=True)
    i = csub.add_parser(
        "init",
        help="create the CA, the server certificate and the CLI's client certificate",
        description="Create ca.pem/ca-key.pem, server.pem/server-key.pem and cli.pem/cli-key.pem. "
        "An existing CA is never replaced; existing certificates are kept.",
    )
    i.add_argument("--dir", default="certs", help="certificate directory (default ./certs)")
    i.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP for the server certificate (repeatable)",
    )
    i.add_argument(
        "--force", action="store_true", help="re-issue the server and CLI certificates (the CA is still kept)"
    )
    _revocation_parsers(csub)
    s = csub.add_parser(
        "issue",
        help="issue a certificate for a remote agent or a user",
        description="Write NAME.pem and NAME-key.pem signed by the mesh CA.",
    )
    s.add_argument("name", help="the identity (agent id or user name): letters, digits, '.', '_', '-'")
    s.add_argument("--role", required=True, choices=["agent", "client"])
    s.add_argument("--dir", default="certs", help="certificate directory holding the CA (default ./certs)")
    s.add_argument("--out", help="where to write the certificate (default: --dir)")
    s.add_argument("--days", type=int, help="lifetime in days (default: 90 for agents, 825 for clients)")
    s.add_argument("--force", action="store_true", help="replace an existing certificate of that name")
    s.add_argument(
        "--admin",
        action="store_true",
        help="client only: an admin certificate, which sees and acts on every user's work",
    )


def _revocation_parsers(csub: Any) -> None:
    r = csub.add_parser(
        "revoke",
        help="revoke a certificate (the daemon refuses it within seconds)",
        description="Add the certificate's serial to crl.pem in --dir (a CRL signed by the "
        "mesh CA). A running daemon reloads it within seconds (or at once on SIGHUP), "
        "refuses the certificate and closes its open streams.",
    )
    r.add_argument("name", nargs="?", help="the certificate NAME (NAME.pem in --dir)")
    r.add_argument("--serial", help="revoke this serial number instead (hex, or decimal with 0d prefix)")
    r.add_argument("--dir", default="certs", help="certificate directory holding the CA (default ./certs)")
    n = csub.add_parser(
        "renew",
        help="re-issue a certificate (new key, same name and role) and revoke the old one",
        description="Write a new NAME.pem/NAME-key.pem with the same name, role and hosts, "
        "then revoke the old certificate's serial.",
    )
    n.add_argument("name", help="the certificate NAME (NAME.pem in --dir, or in --out)")
    n.add_argument("--dir", default="certs", help="certificate directory holding the CA (default ./certs)")
    n.add_argument("--out", help="where the certificate lives (default: --dir)")
    n.add_argument("--days", type=int, help="lifetime in days (default: 90 for agents, 825 for clients)")


def _health_parser(sub: Any) -> None:
    p = sub.add_parser(
        "health",
        help="check that a daemon is serving (gRPC health over mutual TLS)",
        description="Exit 0 when orchgpt answers SERVING, 1 otherwise (used by the Docker HEALTHCHECK).",
    )
    p.add_argument("--address", help="HOST:PORT (default: ORCHGPT_ADDRESS or 127.0.0.1:8443)")
    p.add_argument("--certs", help="certificate directory with ca.pem and the client certificate (default ./certs)")
    p.add_argument("--name", default="cli", help="client certificate name in --certs (default cli)")
    p.add_argument("--wait", type=float, default=0.0, help="keep trying for this many seconds")


def _health(args: argparse.Namespace) -> int:
    import time

    from .client import MeshClient, resolve_address, resolve_certs
    from .errors import ClientError

    async def check() -> int:
        deadline = time.monotonic() + args.wait
        while True:
            client = MeshClient(resolve_address(args.address), resolve_certs(args.certs, name=args.name), timeout=3)
            try:
                await client.check()
                print(f"orchgpt at {client.address}: SERVING")
                return 0
            except ClientError as exc:
                if time.monotonic() >= deadline:
                    print(f"orchgpt: {exc}", file=sys.stderr)
                    return 1
            finally:
                await client.close()
            await asyncio.sleep(0.2)

    return asyncio.run(check())


def _certs(args: argparse.Namespace) -> int:
    from .certs import CA, check_issuable_name, init_dir
    from .errors import CertError

    d = Path(args.dir)
    if args.certs_cmd == "init":
        rep = init_dir(d, args.host, force_leaves=args.force)
        for p in rep.created:
            print(f"created {p}")
        for p in rep.kept:
            print(f"kept    {p} (exists)")
        print(f"private keys in {d} are readable by their owner only (0600)")
        return 0
    name = check_issuable_name(args.name)
    if args.admin and args.role != "client":
        raise CertError("--admin is for client certificates only (--role client)")
    if name == "ca" or (name == "cli" and args.role == "agent"):
        raise CertError(f"{name!r} is reserved; choose another name")
    out = Path(args.out) if args.out else d
    if (out / f"{name}.pem").exists() and not args.force:
        raise CertError(f"{out / (name + '.pem')} exists; pass --force to replace it")
    ca = CA.load(d)
    paths = ca.issue_to(out, name, args.role, admin=args.admin, days=args.days)
    if out != d and not paths.ca.exists():
        paths.ca.write_bytes(ca.cert_pem)
    print(f"created {paths.cert}{' (admin)' if args.admin else ''}")
    print(f"created {paths.key} (0600)")
    print(f"CA certificate: {paths.ca}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from . import logs
    from .config import load_settings
    from .server import serve, write_port_file

    flags = {
        k: getattr(args, k, None)
        for k in (
            "listen",
            "certs",
            "data_dir",
            "store",
            "workspace_root",
            "workflows_dir",
            "max_local_agents",
            "max_agent_concurrency",
            "local_agent_concurrency",
            "spawn",
            "spawn_deadline",
            "local_idle_timeout",
            "agent_types",
            "agents_dir",
            "heartbeat_interval",
            "heartbeat_misses",
            "max_attempts",
            "grace_period",
            "reconnect_grace",
            "max_message_bytes",
            "max_pending_events",
            "local_model",
            "log_level",
            "log_format",
            "max_stream_queue_bytes",
            "agent_messages_per_second",
            "agent_message_burst",
            "max_events_per_task",
            "max_task_input_bytes",
            "list_page_bytes",
            "list_field_bytes",
            "crl_poll_interval",
            "a2a_listen",
            "a2a_grpc",
            "a2a_push",
            "a2a_agents_ca",
            "a2a_public_host",
            "metrics_listen",
            "schedule_poll_interval",
            "otlp_endpoint",
            "cluster",
            "cluster_message_ttl",
            "commit_window_ms",
        )
    }
    if args.a2a_agent:  # NAME=URL, repeatable
        flags["a2a_agents"] = dict(a.partition("=")[::2] for a in args.a2a_agent)
    if args.a2a_agent_auth:  # NAME=VAR, repeatable
        flags["a2a_agents_auth"] = dict(a.partition("=")[::2] for a in args.a2a_agent_auth)
    settings = load_settings(flags, args.config)
    logs.configure(settings.log_level, settings.log_format)

    def ready(server: Any) -> None:
        metrics = getattr(server, "metrics", None)
        if args.metrics_port_file and metrics is not None:
            write_port_file(Path(args.metrics_port_file), metrics.port)
        if args.port_file:
            write_port_file(Path(args.port_file), server.port)

    return asyncio.run(serve(settings, ready))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="orchgpt", description="orchgpt: an agent mesh over mutual-TLS gRPC.")
    ap.add_argument("--version", action="version", version=f"orchgpt {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="{serve,certs,health,bridge,a2a,agents,blocks}", required=True)
    _serve_parser(sub)
    _certs_parser(sub)
    _health_parser(sub)
    from .bridge.cli import add_parser as _bridge_parser

    _bridge_parser(sub)
    from .a2a.cli import add_parser as _a2a_parser

    _a2a_parser(sub)
    from .blocks_cli import add_parser as _blocks_parser

    _blocks_parser(sub)
    from .agents_cli import add_parser as _agents_parser

    _agents_parser(sub)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "certs" and args.certs_cmd in ("revoke", "renew"):
            from .revocation import cli

            return cli(args)
        if args.cmd == "certs":
            return _certs(args)
        if args.cmd == "health":
            return _health(args)
        if args.cmd == "bridge":
            from .bridge.cli import run as _bridge

            return _bridge(args)
        if args.cmd == "agents":
            from .agents_cli import run as _agents

            return _agents(args)
        if args.cmd == "a2a":
            from .a2a.cli import run as _a2a

            return _a2a(args)
        if args.cmd == "blocks":
            from .blocks_cli import run as _blocks

            return _blocks(args)
        return _serve(args)
    except OrchgptError as exc:
        print(f"orchgpt: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"orchgpt: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
