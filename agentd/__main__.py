"""`agentd`: run one agent of the mesh (spawned by orchgpt, or started by hand on any host)."""

from __future__ import annotations

import os

# grpc core's own INFO lines (e.g. about fork) are not structured: keep only its errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
from pathlib import Path

from orchgpt import logs, tracing
from orchgpt.addresses import parse_addresses
from orchgpt.certs import CertPaths
from orchgpt.errors import OrchgptError

from . import __version__
from .errors import AgentdError


class _ListTypes(argparse.Action):
    """--list-types: the built-in types this installation runs, one a line (orchgpt asks)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        from .builtin import available_types

        print("\n".join(sorted(available_types())))
        parser.exit()


def _slots(value: str) -> int:
    from .link_tasks import MAX_CONCURRENCY

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of tasks") from None
    if not 1 <= n <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"{n}: give 1 to {MAX_CONCURRENCY} tasks at once")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentd",
        description="Run one agent of an orchgpt mesh. It connects with mutual TLS, registers its type, "
        "runs the tasks routed to it and reconnects when the orchestrator restarts.",
        epilog="Model settings come from the environment: OPENAI_API_KEY, OPENAI_BASE_URL, ORCHGPT_MODEL, "
        "ORCHGPT_FAST_MODEL, ORCHGPT_FAST_BASE_URL, ORCHGPT_<TYPE>_MODEL, ... (see the README).",
    )
    p.add_argument(
        "--type",
        required=True,
        dest="agent_type",
        help="agent type: built-in (echo, architect, backend, ...) or declared in the daemon's "
        "agents directory (its definition comes from the daemon)",
    )
    p.add_argument("--name", help="agent name = certificate name NAME.pem in --certs (default: the type)")
    p.add_argument(
        "--orchestrator",
        default=None,
        help="HOST:PORT of orchgpt, or HOST:PORT,HOST:PORT,... to fail over to the next daemon "
        "when one is down (default: ORCHGPT_ADDRESS, ORCHESTRATOR_ADDRESS or 127.0.0.1:8443)",
    )
    p.add_argument(
        "--certs",
        default=os.environ.get("ORCHGPT_CERTS", "certs"),
        help="directory with ca.pem, NAME.pem and NAME-key.pem (default ./certs)",
    )
    p.add_argument("--ca", help="CA certificate (overrides --certs)")
    p.add_argument("--cert", help="this agent's certificate (overrides --certs)")
    p.add_argument("--key", help="this agent's private key (overrides --certs)")
    p.add_argument(
        "--server-name",
        help="name to verify in the orchestrator's certificate "
        "(default: localhost for loopback addresses, else the host)",
    )
    p.add_argument(
        "--workspace-root",
        default=os.environ.get("ORCHGPT_WORKSPACE_ROOT"),
        help="where task workspaces are created (default: ./workspaces)",
    )
    p.add_argument(
        "--allow-weak-sandbox",
        action="store_true",
        help="run generated code even where no namespaces are available (resource limits "
        "only; default: refuse). Also ORCHGPT_ALLOW_WEAK_SANDBOX=1",
    )
    p.add_argument(
        "--journal",
        help="file that keeps finished results until orchgpt confirms them "
        "(default: ORCHGPT_RESULTS_JOURNAL, else NAME.results next to the certificate)",
    )
    p.add_argument(
        "--concurrency",
        type=_slots,
        default=os.environ.get("ORCHGPT_AGENT_CONCURRENCY", "1"),
        metavar="N",
        help="run up to N tasks at once (default: ORCHGPT_AGENT_CONCURRENCY, else 1; orchgpt grants at most its "
        "max_agent_concurrency). For agents that wait on I/O (a model server): like a queue consumer's prefetch",
    )
    p.add_argument("--log-level", default=os.environ.get("ORCHGPT_LOG_LEVEL", "info"))
    p.add_argument(
        "--otlp-endpoint",
        default="",
        metavar="URL",
        help="export OpenTelemetry traces over OTLP/HTTP to URL (default: OTEL_EXPORTER_OTLP_ENDPOINT; unset: off)",
    )
    p.add_argument(
        "--list-types",
        action=_ListTypes,
        nargs=0,
        help="print the built-in agent types this installation runs, one a line, and exit",
    )
    p.add_argument("--version", action="version", version=f"agentd {__version__}")
    return p


def _die_with_parent() -> None:
    """Spawned by orchgpt: exit when it dies, even by SIGKILL (Linux PR_SET_PDEATHSIG)."""
    parent = os.environ.get("ORCHGPT_PARENT_PID")
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before the prctl
        raise SystemExit(0)


def _journal_path(args: argparse.Namespace, name: str, certs: CertPaths) -> Path:
    """Where unconfirmed results are kept (--journal, ORCHGPT_RESULTS_JOURNAL, else next to the
    certificate or in the user's state directory: one file per agent name)."""
    from orchgpt.wire import journal

    given = args.journal or os.environ.get("ORCHGPT_RESULTS_JOURNAL")
    return Path(given) if given else journal.default_path(name, certs.cert)


async def _main(args: argparse.Namespace) -> int:
    from .link import Link
    from .runtime import agent_class
    from .sandbox_setup import sandbox_policy
    from .workspace import task_workspace

    declared = None
    try:
        cls = agent_class(args.agent_type)
    except KeyError:  # not built in: a declared type, whose definition comes with REGISTERED
        from .declared import DeclaredAgent  # (only then: it imports the model client)

        cls = declared = DeclaredAgent
    settings = None
    if cls.needs_model:
        from .settings import AgentSettings

        settings = AgentSettings.from_env(args.agent_type)
    agent = declared(args.agent_type, settings) if declared is not None else cls(settings)
    name = args.name or args.agent_type
    d = Path(args.certs)
    certs = CertPaths(
        Path(args.ca or d / "ca.pem"), Path(args.cert or d / f"{name}.pem"), Path(args.key or d / f"{name}-key.pem")
    )
    certs.read()  # a clear error now rather than a TLS failure later
    address = (
        args.orchestrator
        or os.environ.get("ORCHGPT_ADDRESS")
        or os.environ.get("ORCHESTRATOR_ADDRESS")
        or "127.0.0.1:8443"
    )
    parse_addresses(address)  # ConfigError naming a malformed entry
    # --workspace-root (default ORCHGPT_WORKSPACE_ROOT), else the settings' default, else ./workspaces
    if args.workspace_root:
        ws_root = Path(args.workspace_root).resolve()
    elif settings is not None:
        ws_root = Path(settings.workspace_root).resolve()
    else:
        ws_root = Path("workspaces").resolve()
    if settings is not None:
        settings.workspace_root = ws_root
    # generated code run by this agent's sandbox must never see its key, certificates,
    # the daemon's data or other tasks' workspaces
    policy = await sandbox_policy(certs, ws_root, args.allow_weak_sandbox)
    if settings is not None:
        settings.sandbox_policy = policy
    link = Link(
        agent,
        name,
        address,
        certs,
        ws_root,
        args.server_name,
        workspace_for=functools.partial(task_workspace, ws_root),
        journal=_journal_path(args, name, certs),
        concurrency=args.concurrency,
    )
    runner = asyncio.create_task(link.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    waits = {runner, stopper}
    undefined = None
    if declared is not None:
        undefined = asyncio.create_task(agent.missing.wait())  # type: ignore[attr-defined]
        waits.add(undefined)
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if undefined is not None and undefined in done:
        await link.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        raise AgentdError(undefined_type(args.agent_type))
    if undefined is not None:
        undefined.cancel()
    if stopper in done:
        await link.stop()
        runner.cancel()
    else:
        stopper.cancel()
    try:
        await runner
    except asyncio.CancelledError:
        pass
    return 0


def undefined_type(agent_type: str) -> str:
    from .builtin import available_types

    return (
        f"{agent_type!r} is not a built-in agent type ({', '.join(sorted(available_types()))}) and "
        "orchgpt sent no definition of it: declare it in the daemon's agents directory "
        "(docs/agents.md), then `orchgpt agents reload`"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _die_with_parent()
    logs.configure(args.log_level, "json", service="agentd")
    tracing.configure("agentd", args.otlp_endpoint)  # off unless an endpoint is set
    try:
        return asyncio.run(_main(args))
    except (AgentdError, OrchgptError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
