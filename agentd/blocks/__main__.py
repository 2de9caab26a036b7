"""python -m agentd.blocks {list,test}: what `orchgpt blocks` runs."""

from __future__ import annotations

import argparse
import sys

from .cli import add_parser, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="orchgpt", add_help=False)
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    return run(ap.parse_args(["blocks", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
