"""Acknowledgements wait for the commit that holds their change (group commit, issue 17).

With group commit (orchgpt/store/group_commit.py) a store write returns before it is durable:
writes gather in an open *window* that one commit makes durable a moment later. Whatever the
daemon tells a peer after such a write (a Submit's first event, a RUN, a PONG that confirms a
result, a unary RPC's answer) may depend on it, so it must not leave before that commit. This
module is the meeting point, with no dependencies of its own:

- the store registers the future of each open window (``opened``) and drops it once the window
  is committed or failed (``closed``): the future then holds ``None`` or the ``StoreError``;
- the transport asks for the ``barrier()`` when it queues something for a peer, and awaits it
  (``settle``) before that leaves: the wire's ``Outbox`` does it for every stream
  (orchgpt/wire/batching.py), the wire guard for every unary answer (orchgpt/wire_guard.py).

While nothing is open (group commit off, or every write committed) ``barrier()`` is ``None``
and nothing waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

_open: list[asyncio.Future[None]] = []  # the futures of the windows not yet committed


def opened(fut: asyncio.Future[None]) -> None:
    _open.append(fut)


def closed(fut: asyncio.Future[None]) -> None:
    try:
        _open.remove(fut)
    except ValueError:
        pass


def barrier() -> asyncio.Future[Any] | None:
    """What an answer queued now must wait for: the open windows' commit (None: nothing)."""
    if not _open:
        return None
    if len(_open) == 1:
        return _open[0]
    return asyncio.gather(*_open)  # several stores in one process (tests)


async def settle(fut: asyncio.Future[Any] | None = None) -> None:
    """Wait for ``fut`` (default: the current barrier); raises the store's error when that
    commit failed. Cancelling the waiter does not cancel the commit."""
    if fut is None:
        fut = barrier()
        if fut is None:
            return
    if not fut.done():
        await asyncio.shield(fut)
    else:
        fut.result()
