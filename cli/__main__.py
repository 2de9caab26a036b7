"""`autogpt`: the interactive prompt, or one-shot commands for scripts."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import EXIT_CONNECTION, EXIT_INTERRUPTED, EXIT_USAGE, CliError

EXIT_AT_PROMPT_ENV = "ORCHGPT_CLI_EXIT_AT_PROMPT"
HISTORY_ENV = "ORCHGPT_CLI_HISTORY"

DESCRIPTION = """\
autogpt: the command line of the orchgpt agent mesh.

Without -c and with a terminal on stdin it opens the interactive prompt.
With -c COMMAND (repeatable), a COMMAND as arguments, or commands piped on
stdin (one per line; blank lines and # comments are skipped) it runs them one
after the other, streams their events to stdout and exits."""

EPILOG = """\
commands:
  /<agent> <action> [input] [| language] [--approve] [-o KEY=VALUE] [--id TASK_ID]
      agents: manager (man), architect (arch), backend (back), frontend (front),
      designer (design), git, optimizer (opt), mailer (mail), echo, or a type a
      remote agent registered; actions: create, run, terminate, status
  /agents /tasks /task ID /logs ID /watch ID /cancel ID /fetch ID PATH
  /history [N] /sessions /session [ID] /publish SESSION [TAG ...] /gallery /help
  e.g. autogpt -c '/architect create "fastapi app" | python'

output (one-shot):
  plain text: one line per event, "[<agent> <task-id>] <text>", then the
  task's output and its final state. --json: one JSON object per line; task
  events are {"type": "event", "kind", "task_id", "seq", "state", "text",
  "agent_type", "agent_id", "parent_task_id", "ts_ms", "data", "artifact",
  "approval", "result"} (every key present, null when it does not apply; kind
  is status|log|token|step|artifact|approval|result; the result event's
  "result" holds state, output, error, artifacts and usage); meta commands
  print {"type": "<command>", ...}. Errors go to stderr.

exit codes:
  0  every command succeeded
  1  a task failed or was cancelled, or the orchestrator refused a command
  2  usage error: bad arguments or a command line that does not parse
  3  connection problem: malformed address, orchestrator unreachable,
     certificate missing or refused
  130  interrupted with Ctrl-C (the running task is cancelled)

environment:
  ORCHGPT_ADDRESS, ORCHESTRATOR_ADDRESS  orchestrator HOST:PORT (default 127.0.0.1:8443)
  ORCHGPT_CERTS                          certificate directory (default ./certs)
  ORCHGPT_CA, ORCHGPT_CERT, ORCHGPT_KEY  certificate files (override the directory)
  ORCHGPT_CLI_HISTORY                    the prompt's history file"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="autogpt",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "words", nargs="*", metavar="COMMAND", help="one command as arguments, e.g. autogpt /echo run hello"
    )
    ap.add_argument(
        "-c",
        "--command",
        action="append",
        dest="commands",
        metavar="COMMAND",
        help="run this command and exit (repeatable: run in order)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per event on stdout (one-shot)")
    ap.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="approve every tool call a task asks about (one-shot; otherwise they are rejected)",
    )
    ap.add_argument(
        "--approve", action="store_true", help="start every task in approval mode: ask before each tool call"
    )
    ap.add_argument(
        "-k", "--keep-going", action="store_true", help="one-shot: run the remaining commands after one fails"
    )
    conn = ap.add_argument_group("connection")
    conn.add_argument(
        "--orchestrator",
        "-O",
        metavar="HOST:PORT",
        help="orchestrator address (default: ORCHGPT_ADDRESS, ORCHESTRATOR_ADDRESS, 127.0.0.1:8443)",
    )
    conn.add_argument(
        "--certs", metavar="DIR", help="directory with ca.pem, cli.pem, cli-key.pem (default: ORCHGPT_CERTS or ./certs)"
    )
    conn.add_argument("--ca", metavar="FILE", help="CA certificate")
    conn.add_argument("--cert", metavar="FILE", help="client certificate")
    conn.add_argument("--key", metavar="FILE", help="client key")
    conn.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="how long one request may take (default 10)"
    )
    conn.add_argument(
        "--reconnect",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="one-shot: how long to wait for a restarting orchestrator while a task runs (default 30)",
    )
    ap.add_argument("--session", metavar="ID", help="add the tasks to this session (default: a new one)")
    ap.add_argument(
        "--history",
        metavar="FILE",
        help=f"the prompt's history file (default: ${HISTORY_ENV} or autogpt_history in the user data directory)",
    )
    ap.add_argument("--version", action="version", version=f"autogpt {__version__}")
    ap.add_argument("--exit-at-prompt", action="store_true", help=argparse.SUPPRESS)
    return ap


def _words_to_command(words: Sequence[str]) -> str:
    from .grammar import quote

    return " ".join(w if (w == "|" or not any(c.isspace() for c in w)) else quote(w) for w in words)


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's C core logs handshake failures on stderr; the CLI says it in one line itself.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    ap = build_parser()
    args = ap.parse_args(argv)
    commands: list[str] = list(args.commands or [])
    if args.words:
        if commands:
            ap.error("give a command either with -c or as arguments, not both")
        commands.append(_words_to_command(args.words))
    from orchgpt import tracing

    # traces when OTEL_EXPORTER_OTLP_ENDPOINT is set; an unreachable collector delays exit <= 2 s
    tracing.configure("autogpt", quiet=True, export_timeout=2.0)
    interactive = not commands and sys.stdin.isatty()
    if interactive and args.json:
        ap.error("--json needs -c COMMAND or commands on stdin")
    try:
        if interactive:
            return _repl(args)
        if not commands:
            commands = sys.stdin.read().splitlines()
        return _oneshot(args, commands)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `autogpt ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def _connection(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .connect import ConnectionSettings

    return ConnectionSettings(args.orchestrator, args.certs, args.ca, args.cert, args.key)


def _oneshot(args: argparse.Namespace, commands: list[str]) -> int:
    import asyncio

    from .context import Context
    from .oneshot import run_oneshot
    from .output import StreamOutput

    out = StreamOutput(json_mode=args.json)

    async def go() -> int:
        ctx = Context(
            out,
            _connection(args),
            session_id=args.session or "",
            approve_all=args.approve,
            reconnect_timeout=args.reconnect,
            timeout=args.timeout,
        )
        ctx.fancy = out.colour
        try:
            return await run_oneshot(ctx, commands, yes=args.yes, keep_going=args.keep_going)
        finally:
            await ctx.close()

    try:
        return asyncio.run(go())
    except CliError as exc:
        out.error(str(exc))
        return exc.exit_code


def _repl(args: argparse.Namespace) -> int:
    import asyncio

    from .repl import Repl, history_path

    exit_at_prompt = args.exit_at_prompt or os.environ.get(EXIT_AT_PROMPT_ENV, "") not in ("", "0")
    if exit_at_prompt:  # on exit prompt-toolkit waits up to 1s for a cursor-position answer
        os.environ.setdefault("PROMPT_TOOLKIT_NO_CPR", "1")  # that a pty without a terminal never sends
    try:
        path = history_path(args.history)
    except CliError as exc:
        print(f"autogpt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    repl = Repl(
        _connection(args),
        history=path,
        session_id=args.session or "",
        approve_all=args.approve,
        timeout=args.timeout,
        exit_at_prompt=exit_at_prompt,
    )
    try:
        return asyncio.run(repl.run())
    except CliError as exc:
        print(f"autogpt: {exc}", file=sys.stderr)
        return exc.exit_code if exc.exit_code else EXIT_CONNECTION


if __name__ == "__main__":
    sys.exit(main())
