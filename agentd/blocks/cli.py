"""`orchgpt blocks list` (every block with its JSON Schemas) and `orchgpt blocks test` (every
block's self-test, offline; exit status 1 when one fails, naming the block and the pin)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("blocks", help="the graph blocks: list them, run their self-tests")
    bsub = p.add_subparsers(dest="blocks_cmd", metavar="{list,test}", required=True)
    ls = bsub.add_parser("list", help="every block with its input and output JSON Schemas")
    ls.add_argument("--json", action="store_true", help="one JSON document (the catalog)")
    t = bsub.add_parser("test", help="run every block's self-test offline")
    for q in (ls, t):
        q.add_argument(
            "--module",
            action="append",
            default=[],
            metavar="MODULE",
            help="also load the blocks of this Python module (repeatable)",
        )
    t.add_argument("ids", nargs="*", metavar="ID", help="only these blocks")


def _load(modules: list[str]) -> dict[str, Any]:
    from .registry import _from_module, load

    blocks = load()
    for name in modules:
        _from_module(importlib.import_module(name))
    return {**blocks, **load()}


def run(args: argparse.Namespace) -> int:
    blocks = _load(args.module)
    if args.blocks_cmd == "list":
        entries = [cls.schema() for _, cls in sorted(blocks.items())]
        if args.json:
            print(json.dumps(entries, indent=2))
            return 0
        for e in entries:
            print(f"{e['id']}  ({', '.join(e['categories'])})  {e['name']}: {e['description']}")
            print(f"  input:  {json.dumps(e['input_schema'])}")
            print(f"  output: {json.dumps(e['output_schema'])}")
        return 0
    from .selftest import test_all

    unknown = [i for i in args.ids if i not in blocks]
    if unknown:
        print(f"orchgpt blocks test: unknown block(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    chosen = {k: v for k, v in blocks.items() if not args.ids or k in args.ids}
    results = asyncio.run(test_all(chosen))
    failed = 0
    for bid, problems in results.items():
        if problems:
            failed += 1
            print(f"FAIL {bid}")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"ok   {bid}")
    print(f"{len(results) - failed} of {len(results)} block self-tests passed")
    return 1 if failed else 0
