"""`orchgpt blocks list|test`: the blocks live with the agents (agentd.blocks), which the daemon
never imports, so these run the agent program's block commands (``python -m agentd.blocks``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

BLOCKS_COMMAND: tuple[str, ...] = (sys.executable, "-m", "agentd.blocks")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "blocks",
        help="the graph blocks: `list` them with their JSON Schemas, `test` runs every self-test",
        add_help=False,
    )
    p.add_argument("blocks_args", nargs=argparse.REMAINDER, metavar="{list,test} ...")


def run(args: argparse.Namespace) -> int:
    rest = list(args.blocks_args) or ["--help"]
    return subprocess.call([*BLOCKS_COMMAND, *rest])
