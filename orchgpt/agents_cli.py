"""`orchgpt agents check DIR` and `orchgpt agents reload` (declared agent types, docs/agents.md).

``check`` validates the TOML files of a directory without starting anything: exit 0 and one
line per type, or exit 1 and one line per problem, each naming the file and the key.
``reload`` validates the running daemon's agents directories the same way, then sends SIGHUP
to the daemon that holds the data directory's lock (its pid is in DATA_DIR/orchgpt.lock); the
daemon re-reads the directories (and the revocation list) and logs ``agents_reloaded``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .agent_defs import AgentDefError, default_dirs, load_dir, load_dirs
from .errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agents", help="check and reload the agent types declared in TOML files")
    asub = p.add_subparsers(dest="agents_cmd", metavar="{check,reload}", required=True)
    c = asub.add_parser(
        "check",
        help="validate the agent definitions of a directory (starts nothing)",
        description="Load every *.toml file of DIR as an agent definition; print the "
        "types, or every problem with its file and key (exit 1).",
    )
    c.add_argument("dir", metavar="DIR", help="the agents directory, e.g. agents.d")
    r = asub.add_parser(
        "reload",
        help="make the running daemon re-read its agents directories (SIGHUP)",
        description="Validate the agents directories of the daemon's settings, then send "
        "SIGHUP to the daemon holding the data directory (its pid is in the lock file).",
    )
    r.add_argument("--config", help="the daemon's TOML settings file")
    r.add_argument("--data-dir", dest="data_dir", help="the daemon's data directory")
    r.add_argument("--agents-dir", dest="agents_dir", help="the daemon's agents directory")


def run(args: argparse.Namespace) -> int:
    if args.agents_cmd == "check":
        return _check(Path(args.dir))
    return _reload(args)


def _check(d: Path) -> int:
    try:
        defs = load_dir(d)
    except AgentDefError as exc:
        for p in exc.problems:
            print(f"orchgpt agents check: {p}", file=sys.stderr)
        return 1
    for name, ad in sorted(defs.items()):
        extra = [f"tools: {', '.join(ad.tools)}"] if ad.tools else []
        extra += [f"mcp: {', '.join(ad.mcp)}"] if ad.mcp else []
        extra += [f"a2a: {ad.a2a.url}"] if ad.a2a else []
        print(f"{name:16} {ad.description or '-'}" + (f"  ({'; '.join(extra)})" if extra else ""))
    print(f"{len(defs)} agent type{'s' if len(defs) != 1 else ''} in {d}: ok")
    return 0


def _reload(args: argparse.Namespace) -> int:
    from .config import load_settings

    flags = {"data_dir": args.data_dir, "agents_dir": args.agents_dir}
    s = load_settings(flags, args.config)
    dirs = default_dirs(s.agents_dir, s.config_file, s.data_dir)
    try:
        defs = load_dirs(dirs)
    except AgentDefError as exc:
        for p in exc.problems:
            print(f"orchgpt agents reload: {p}", file=sys.stderr)
        print(
            "orchgpt agents reload: not reloaded (the daemon keeps its definitions)",
            file=sys.stderr,
        )
        return 1
    pid = daemon_pid(s.data_dir)
    os.kill(pid, signal.SIGHUP)
    print(
        f"sent SIGHUP to orchgpt (pid {pid}): it reloads {len(defs)} agent type(s) from "
        + ", ".join(str(d) for d in dirs)
    )
    return 0


def daemon_pid(data_dir: Path) -> int:
    """The pid of the daemon holding ``data_dir``'s lock; ConfigError when none holds it."""
    from .datadir import LOCK_NAME, holder_of

    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise ConfigError(f"no orchgpt daemon runs on the data dir {data_dir} (no {path})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pass  # held: a daemon runs
    else:
        raise ConfigError(f"no orchgpt daemon runs on the data dir {data_dir} (its lock is free)")
    finally:
        os.close(fd)
    pid = holder_of(data_dir).get("pid")
    if not isinstance(pid, int) or pid <= 0:
        raise ConfigError(f"the orchgpt daemon on {data_dir} has not recorded its pid yet; try again")
    return pid
