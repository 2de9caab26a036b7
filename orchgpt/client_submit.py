"""SubmitStream on the client side: many tasks on one call (MeshClient.submit_stream).

    async with client.submit_stream(results_only=True) as s:
        result = await s.run(Command("echo", Action.RUN, "hi"))      # the RESULT event
        futures = s.submit_many([Command("echo", Action.RUN, str(i)) for i in range(100)])
        results = await asyncio.gather(*futures)

Submissions queued while a frame is being written go out together in the next frame. Every
command gets a task id (its idempotency key) unless it has one. A submission the daemon does not
accept fails its future with a ClientError (the daemon's code and message); the stream goes on.
Leaving the ``async with`` block closes the sending side and waits until the daemon has ended
the stream (every task of it ended); an error inside the block cancels the call instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from . import tracing
from .errors import ClientError
from .iac.v1 import iac_pb2 as pb
from .models import Command, EventKind, TaskEvent, new_id
from .wire import codec

MAX_FRAME = 1024  # submissions in one frame (the daemon's limit: servicer_submit.MAX_FRAME_SUBMISSIONS)


class SubmitStream:
    """One SubmitStream call; use it as an async context manager (MeshClient.submit_stream)."""

    def __init__(
        self,
        stub: Any,
        explain: Callable[[grpc.aio.AioRpcError], ClientError],
        sender: str = "",
        results_only: bool = False,
        on_event: Callable[[TaskEvent], None] | None = None,
    ) -> None:
        self._stub = stub
        self._explain = explain
        self._sender = sender
        self.results_only = results_only
        self.on_event = on_event  # every event that is not a RESULT of a submitted task (results_only: none)
        self._pending: dict[str, asyncio.Future[TaskEvent]] = {}
        self._queue: list[pb.SubmitRequest] = []
        self._ready: asyncio.Event = asyncio.Event()
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.error: ClientError | None = None  # why the stream ended, when it failed

    async def __aenter__(self) -> SubmitStream:
        self._call = self._stub.SubmitStream(metadata=tracing.grpc_metadata())
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write()), loop.create_task(self._read())]
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.cancel()
            return
        await self.close()

    # ---- submitting
    def submit(self, command: Command) -> asyncio.Future[TaskEvent]:
        """Queue one submission; the future holds its RESULT event (ClientError when refused)."""
        if self.error is not None:
            raise self.error
        if self._closing:
            raise ClientError("the submission stream is closed", "FAILED_PRECONDITION")
        if not command.task_id:
            command.task_id = new_id()
        fut = self._pending.get(command.task_id)
        if fut is None:
            fut = self._pending[command.task_id] = asyncio.get_running_loop().create_future()
        self._queue.append(
            pb.SubmitRequest(command=codec.command_to_pb(command), sender=self._sender, results_only=self.results_only)
        )
        self._ready.set()
        return fut

    def submit_many(self, commands: Iterable[Command]) -> list[asyncio.Future[TaskEvent]]:
        return [self.submit(c) for c in commands]

    async def run(self, command: Command) -> TaskEvent:
        """Submit one command and wait for its RESULT event."""
        return await self.submit(command)

    @property
    def unfinished(self) -> int:
        return len(self._pending)

    # ---- ending
    async def close(self) -> None:
        """No more submissions: wait until the daemon ends the stream (every task ended)."""
        self._closing = True
        self._ready.set()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            self.cancel()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """End the call at once (the tasks go on in the daemon; Watch follows them)."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        if self._call is not None:
            self._call.cancel()
        self._fail(ClientError("the submission stream was closed before the task ended", "CANCELLED"))

    def _fail(self, err: ClientError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # (retrieved: a future nobody awaits any more logs nothing)

    # ---- the call's two directions
    async def _write(self) -> None:
        call = self._call
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    frame, self._queue = self._queue[:MAX_FRAME], self._queue[MAX_FRAME:]
                    await call.write(pb.SubmitBatch(submissions=frame))
                if self._closing:
                    await call.done_writing()
                    return
        except grpc.aio.AioRpcError:
            return  # the reader reports the call's status
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            return  # the call ended meanwhile

    async def _read(self) -> None:
        call, pending, on_event = self._call, self._pending, self.on_event
        try:
            async for batch in call:
                for env in batch.envelopes:
                    if env.HasField("event"):
                        ev = codec.event_from_pb(env.event, env.timestamp_ms)
                        fut = pending.get(ev.task_id) if ev.kind == EventKind.RESULT else None
                        if fut is not None:
                            del pending[ev.task_id]
                            if not fut.done():
                                fut.set_result(ev)
                        elif on_event is not None:
                            on_event(ev)
                    elif env.HasField("error"):
                        self._refused(env.task_id, env.error.code, env.error.message)
        except grpc.aio.AioRpcError as exc:
            self.error = self._explain(exc)
        if self.error is None and self._pending:
            self.error = ClientError(f"the stream ended with {len(self._pending)} tasks unfinished", "UNKNOWN")
        if self.error is not None:
            self._fail(self.error)

    def _refused(self, task_id: str, code: str, message: str) -> None:
        fut = self._pending.pop(task_id, None) if task_id else None
        err = ClientError(message, code)
        if fut is None:  # a frame refused whole, or a submission without a task id: not this client's doing
            self.error = self.error or err
            return
        if not fut.done():
            fut.set_exception(err)
            fut.exception()
