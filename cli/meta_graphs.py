"""Graph commands: /graph create FILE, /graphs, /graph show ID, /graph run ID [JSON],
/graph delete ID, /blocks (docs/graphs.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchgpt.models import Action, Command

from .errors import CliError, ParseError
from .registry import meta
from .render import Line, age, one_line, table

if TYPE_CHECKING:
    from orchgpt.graphs.records import GraphRecord

    from .context import Context

USAGE = "/graph create FILE | show ID [VERSION] | run ID [JSON] [VERSION] | delete ID"


def _graph_json(r: GraphRecord, with_definition: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "graph_id": r.graph_id,
        "version": r.version,
        "versions": r.versions,
        "name": r.name,
        "owner": r.owner,
        "created_ms": r.created_ms,
    }
    if with_definition:
        d["definition"] = json.loads(r.definition or "{}")
    return d


@meta("graph", USAGE, "create, show, run or delete a graph of blocks", args=(2, 4))
async def graph_(ctx: Context, args: list[str]) -> None:
    sub, ref, rest = args[0].lower(), args[1], args[2:]
    if len(rest) > (2 if sub == "run" else 1):
        raise ParseError(f"/graph {sub}: too many arguments: usage {USAGE}")
    if sub == "create":
        await _create(ctx, ref, rest)
    elif sub == "show":
        await _show(ctx, ref, rest)
    elif sub == "run":
        await _run(ctx, ref, rest[0] if rest else "{}", rest[1] if len(rest) > 1 else "")
    elif sub == "delete" and not rest:
        n = await ctx.call(lambda c: c.delete_graph(ref))
        ctx.out.record(
            "graph_deleted",
            {"graph_id": ref, "versions_deleted": n},
            [[("ok", f"graph {ref} deleted ({n} version{'s' if n != 1 else ''})")]],
        )
    else:
        raise ParseError(f"/graph {' '.join(args)}: usage {USAGE}")


async def _create(ctx: Context, path: str, rest: list[str]) -> None:
    if rest:
        raise ParseError(f"/graph create takes one FILE: usage {USAGE}")
    f = Path(path).expanduser()
    try:
        text = f.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read the graph file {path}: {exc.strerror or exc}") from None
    fmt = "toml" if f.suffix.lower() == ".toml" else "json" if f.suffix.lower() == ".json" else ""
    rec, created = await ctx.call(lambda c: c.create_graph(text, fmt), timeout=90)
    how = (
        "created"
        if created and rec.version == 1
        else f"saved as version {rec.version}"
        if created
        else f"unchanged (version {rec.version})"
    )
    ctx.out.record(
        "graph",
        {"graph": _graph_json(rec), "created": created},
        [[("ok", rec.graph_id), ("", f"  {rec.name}: {how}")]],
    )


async def _show(ctx: Context, ref: str, rest: list[str]) -> None:
    version = int(rest[0]) if rest and rest[0].isdigit() else 0
    if rest and not version:
        raise ParseError(f"/graph show {ref} {rest[0]}: the version is a number")
    rec = await ctx.call(lambda c: c.get_graph(ref, version))
    d = json.loads(rec.definition or "{}")
    lines: list[Line] = [[("head", f"graph {rec.graph_id}: {rec.name} (version {rec.version} of {rec.versions})")]]
    if d.get("description"):
        lines.append([("", f"  {d['description']}")])
    lines += table(
        ["NODE", "BLOCK", "INPUT"],
        [[n["id"], n["block"], one_line(json.dumps(n.get("input", {})), 80)] for n in d.get("nodes", [])],
    )
    for x in d.get("links", []):
        lines.append([("", f"  {x['from']} -> {x['to']}")])
    for name, spec in d.get("inputs", {}).items():
        lines.append([("", f"  input {name} -> {spec['to']} (default {json.dumps(spec.get('default'))})")])
    for name, src in d.get("outputs", {}).items():
        lines.append([("", f"  output {name} <- {src}")])
    ctx.out.record("graph", {"graph": _graph_json(rec, with_definition=True)}, lines)


async def _run(ctx: Context, ref: str, given: str, version: str = "") -> None:
    from .runner import run_command

    try:
        value = json.loads(given)
    except ValueError as exc:
        raise ParseError(f'/graph run {ref}: the input is not JSON ({exc}); e.g. \'{{"who": "me"}}\'') from None
    if not isinstance(value, dict):
        raise ParseError(f"/graph run {ref}: the input must be a JSON object of the graph's inputs")
    view = await run_command(ctx, Command("graph", Action.RUN, json.dumps(value), options={"graph_id": ref}))
    if not view.ok:
        r = view.result
        raise CliError(
            f"task {view.short} (graph {ref}) {view.state}: "
            f"{(r.error if r is not None and r.error else '') or 'no reason given'}"
        )


@meta("graphs", "/graphs", "your graphs (latest versions)")
async def graphs_(ctx: Context, args: list[str]) -> None:
    recs = await ctx.call(lambda c: c.list_graphs())
    lines = table(
        ["GRAPH", "NAME", "VERSION", "CREATED"],
        [[r.graph_id, r.name, f"{r.version}", age(r.created_ms)] for r in recs],
    )
    lines.append([("info", f"{len(recs)} graph{'s' if len(recs) != 1 else ''}")])
    ctx.out.record("graphs", {"graphs": [_graph_json(r) for r in recs]}, lines)


@meta("blocks", "/blocks", "the blocks graphs are made of (with their JSON Schemas in --json)")
async def blocks_(ctx: Context, args: list[str]) -> None:
    blocks = await ctx.call(lambda c: c.list_blocks(), timeout=90)
    lines = table(
        ["BLOCK", "CATEGORIES", "DESCRIPTION"],
        [[b["id"], ",".join(b["categories"]), b["description"]] for b in blocks],
    )
    ctx.out.record("blocks", {"blocks": blocks}, lines)
