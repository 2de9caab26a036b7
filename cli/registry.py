"""The meta commands (/agents, /tasks, /help, ...): registered with a decorator.

    @meta("task", "/task ID", "a task's state, events, result and sub-tasks", args=(1, 1),
          complete="task")
    async def task(ctx: Context, args: list[str]) -> None: ...

`/help` is built from this registry, and so are completion and highlighting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import ParseError

if TYPE_CHECKING:
    from .context import Context
    from .grammar import MetaCommand

Handler = Callable[["Context", list[str]], Awaitable[None]]


@dataclass(frozen=True)
class MetaSpec:
    name: str
    usage: str
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    min_args: int = 0
    max_args: int | None = None
    complete: str = ""  # what the arguments are: task, session, agent, command
    repl_only: bool = False
    offline: bool = False  # works without the orchestrator


COMMANDS: dict[str, MetaSpec] = {}
_BY_NAME: dict[str, MetaSpec] = {}


def meta(
    name: str,
    usage: str,
    help: str,
    *,
    aliases: tuple[str, ...] = (),
    args: tuple[int, int | None] = (0, 0),
    complete: str = "",
    repl_only: bool = False,
    offline: bool = False,
) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        spec = MetaSpec(name, usage, help, fn, aliases, args[0], args[1], complete, repl_only, offline)
        for n in (name, *aliases):
            if n in _BY_NAME:
                raise ValueError(f"meta command /{n} registered twice")
            _BY_NAME[n] = spec
        COMMANDS[name] = spec
        return fn

    return deco


def extend(name: str, subcommands: dict[str, Handler], usage: str, help: str, max_args: int) -> None:
    """Give a registered command sub-commands, chosen by its first argument and handled elsewhere
    (e.g. ``/session clear ID``); other arguments go to its own handler, within its own bounds."""
    spec = _BY_NAME[name]

    async def handler(ctx: Context, args: list[str]) -> None:
        sub = subcommands.get(args[0].lower()) if args else None
        if sub is not None:
            return await sub(ctx, args[1:])
        check_args(spec, args)
        return await spec.handler(ctx, args)

    new = replace(spec, usage=usage, help=help, handler=handler, max_args=max_args)
    for n in (spec.name, *spec.aliases):
        _BY_NAME[n] = new
    COMMANDS[spec.name] = new


def _load() -> None:
    from . import meta as _handlers  # noqa: F401  (registers the commands)
    from . import meta_graphs as _graphs  # noqa: F401
    from . import meta_sessions as _session_handlers  # noqa: F401  (history and sessions)
    from . import meta_workflows as _workflows  # noqa: F401
    from . import schedules as _schedules  # noqa: F401  (/schedule, /schedules)


def lookup(name: str) -> MetaSpec | None:
    _load()
    return _BY_NAME.get(name.lower())


def names() -> list[str]:
    """Every meta command name, aliases included."""
    _load()
    return list(_BY_NAME)


def specs() -> list[MetaSpec]:
    _load()
    return list(COMMANDS.values())


def check_args(spec: MetaSpec, args: list[str]) -> None:
    n = len(args)
    if n < spec.min_args:
        raise ParseError(f"/{spec.name} needs more arguments: usage {spec.usage}")
    if spec.max_args is not None and n > spec.max_args:
        extra = " ".join(args[spec.max_args :])
        raise ParseError(f'/{spec.name}: unexpected "{extra}": usage {spec.usage}')


async def dispatch(ctx: Context, mc: MetaCommand) -> None:
    spec = lookup(mc.name)
    if spec is None:  # the parser only returns registered names
        raise ParseError(f"unknown command /{mc.name}: /help lists the commands")
    if spec.repl_only and not ctx.interactive:
        raise ParseError(f"/{spec.name} works in the interactive prompt only")
    check_args(spec, mc.args)
    await spec.handler(ctx, mc.args)
