"""The bottom toolbar: orchestrator, connection, agents idle/busy, running tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .render import short_id

if TYPE_CHECKING:
    from .context import Context

SEP = ("class:toolbar.dim", " │ ")


def toolbar(ctx: Context) -> list[tuple[str, str]]:
    frags: list[tuple[str, str]] = [("", f" orchgpt {ctx.address} ")]
    if ctx.connected is True:
        frags.append(("class:toolbar.ok", "● connected"))
    elif ctx.connected is False:
        frags.append(("class:toolbar.bad", "○ disconnected, retrying"))
    else:
        frags.append(("class:toolbar.dim", "… connecting"))
    idle = sum(1 for a in ctx.agents if str(a.state) == "idle")
    busy = sum(1 for a in ctx.agents if str(a.state) == "busy")
    frags += [SEP, ("", f"agents {idle} idle, {busy} busy"), SEP]
    running = ctx.running()
    frags.append(("", f"tasks {len(running)} running"))
    if ctx.approvals is not None and (n := len(ctx.approvals.pending)):
        frags += [SEP, ("class:toolbar.bad", f"{n} approval{'s' if n != 1 else ''} waiting")]
    frags += [SEP, ("class:toolbar.dim", f"session {short_id(ctx.session_id)} · /help · Ctrl-D exits ")]
    return frags
