"""Submissions: the checks every Submit goes through (``_admit``), and SubmitStream, many
submissions on one stream (issue 17).

A Submit call costs the daemon one gRPC call and several frames per task; SubmitStream carries
any number of tasks on one call, and several tasks' events in one frame (the stream's Outbox packs
whatever is ready), optionally only each task's RESULT. Each submission is judged as a Submit
(``_admit``: sender, authorization, idempotency key, input size); one that is not accepted gets an
ERROR envelope naming its task id and the stream goes on. As on Submit, a task's first envelope
leaves only once its creation is committed (the Outbox waits for the group commit,
orchgpt/wire/batching.py).

Bounds (docs/protocol.md §10): the daemon reads no further frame while a stream has
``MAX_OPEN_TASKS`` unfinished tasks or half its ``max_pending_events`` envelopes wait to be sent
(the client's writes then wait, by HTTP/2 flow control); a client that stops reading altogether
is cut at ``max_pending_events`` waiting envelopes or ``max_stream_queue_bytes``, with
RESOURCE_EXHAUSTED, as a watcher is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from . import authz, codec, logs, tracing, validate
from .batching import Outbox
from .certs import Identity
from .errors import ErrorCode, OrchgptError, StoreError
from .iac.v1 import iac_pb2 as pb
from .limits import input_too_large
from .models import Task, TaskEvent
from .servicer_base import ORCH, ServicerBase
from .wire.coalesce import TokenCoalescer
from .wire_guard import Malformed

log = logs.get("orchgpt.servicer")

MAX_OPEN_TASKS = 1024  # unfinished tasks of one stream; past it the daemon reads no more frames
MAX_FRAME_SUBMISSIONS = 1024  # submissions in one SubmitBatch frame


class NotAccepted(OrchgptError):
    """A submission refused before it became a task (its code: the status or ERROR code)."""


class _Feed:
    """One task of a stream, as the mesh sees a subscriber of it (mesh_fanout.Subscriber)."""

    __slots__ = ("results_only", "stream", "task_id")

    def __init__(self, stream: SubmissionStream, task_id: str, results_only: bool) -> None:
        self.stream = stream
        self.task_id = task_id
        self.results_only = results_only

    def deliver(self, event: TaskEvent) -> bool:
        return self.stream.deliver(self, event)

    def close(self, reason: str) -> None:
        self.stream.ended(self.task_id)


class SubmissionStream:
    """The daemon's side of one SubmitStream call: its tasks and the outbox their events go to."""

    __slots__ = (
        "_room",
        "frames_in",
        "frames_out",
        "limit",
        "open",
        "outbox",
        "reading",
        "refused",
        "submitted",
        "tokens",
        "type_of",
    )

    def __init__(self, outbox: Outbox, limit: int, type_of: Callable[[str], str]) -> None:
        self.outbox = outbox
        self.limit = limit  # envelopes waiting for the client (max_pending_events)
        self.type_of = type_of
        self.open: dict[str, _Feed] = {}  # unfinished tasks followed by this stream
        self.tokens = TokenCoalescer()
        self.reading = True  # the client may still send submissions
        self._room: asyncio.Future[None] | None = None  # the reader waits for room
        self.submitted = 0
        self.refused = 0
        self.frames_in = self.frames_out = 0  # (logged when the stream ends: how well frames were shared)

    # ---- the mesh's side
    def deliver(self, feed: _Feed, event: TaskEvent) -> bool:
        outbox = self.outbox
        if feed.results_only:
            if event.kind != "result" or event.task_id != feed.task_id:
                return True  # (a sub-task's events reach its root's feed too)
        elif self.tokens.fold(outbox, event):
            return True
        if len(outbox) >= self.limit:
            outbox.abort(
                "RESOURCE_EXHAUSTED",
                f"client too slow: {self.limit} events pending (max_pending_events); "
                "follow the stream's tasks with Watch(task_id, after_seq)",
            )
            return False
        env = codec.event_envelope(event, agent_type=event.agent_type or self.type_of(event.task_id))
        if event.kind == "token":  # acknowledges nothing: not held by an open commit window (as on Watch)
            outbox.put_live(env)
        else:
            outbox.put(env)
        if not feed.results_only:
            self.tokens.queued(outbox, event, env)
        return True

    def ended(self, task_id: str) -> None:
        if self.open.pop(task_id, None) is not None:
            self.wake()
            if not self.reading and not self.open:
                self.outbox.close("every task of the stream ended")

    # ---- the servicer's side
    def follow(
        self, task: Task, results_only: bool, replay_then_follow: Callable[..., tuple[list[TaskEvent], bool]]
    ) -> None:
        """Queue the task's events so far (its first envelope), and follow the rest; a task this
        stream follows already is not followed twice (its events come once)."""
        self.submitted += 1
        task_id = task.task_id
        if task_id in self.open:
            return
        feed = _Feed(self, task_id, results_only)
        replay, following = replay_then_follow(task_id, 0, feed)
        put = self.outbox.put
        for ev in replay:
            if results_only and (ev.kind != "result" or ev.task_id != task_id):
                continue
            put(codec.event_envelope(ev, agent_type=task.agent_type))
        if following:
            self.open[task_id] = feed

    def error(self, task_id: str, code: str, message: str) -> None:
        """An ERROR envelope for a submission (or a frame) that is not accepted."""
        self.refused += 1
        self.outbox.put(codec.new_envelope(pb.ERROR, ORCH, task_id=task_id, error=pb.Error(code=code, message=message)))

    def done_reading(self) -> None:
        self.reading = False
        if not self.open:
            self.outbox.close("every task of the stream ended")

    def full(self) -> bool:
        return len(self.open) >= MAX_OPEN_TASKS or len(self.outbox) >= self.limit // 2

    async def room(self) -> None:
        """Wait until the stream may take more submissions (or is closed)."""
        while self.full() and not self.outbox.closed:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None

    def wake(self) -> None:
        r = self._room
        if r is not None and not r.done():
            r.set_result(None)

    def unfollow_all(self, unsubscribe: Callable[[_Feed, str], None]) -> None:
        for task_id, feed in list(self.open.items()):
            unsubscribe(feed, task_id)
        self.open.clear()


class SubmitRpcs(ServicerBase):
    """Submit's checks and SubmitStream (part of servicer.MeshServicer, through ClientRpcs)."""

    def _submit_access(self, ident: Identity, task_id: str, session_id: str) -> authz.Decision:
        """An idempotency key or a session id of someone else's work is refused."""
        existing = self.mesh.get_task(task_id) if task_id else None
        exists = self.mesh.session_exists(session_id)
        owned = self.mesh.session_exists(session_id, authz.owner_of(ident))
        return authz.submit_access(ident, existing, self.mesh.get_task, session_id, exists, owned)

    def _admit(self, ident: Identity, request: pb.SubmitRequest, parent: tuple[str, str] | None) -> Task:
        """The task of a submission (new, or the one its task id names already); NotAccepted (or
        the codec's, the mesh's error) with the code and a message naming the problem."""
        if request.sender and request.sender != ident.name:
            raise NotAccepted(
                f"sender {request.sender!r} does not match the certificate identity {ident.name!r}",
                ErrorCode.PERMISSION_DENIED,
            )
        if not self.accepting:
            raise NotAccepted("orchgpt is shutting down; not accepting new work", ErrorCode.UNAVAILABLE)
        cmd = codec.command_from_pb(request.command)  # DecodeError: INVALID_ARGUMENT
        d = self._submit_access(ident, cmd.task_id, cmd.session_id)
        if d and authz.principal(ident) != authz.ADMIN:
            d = authz.workspace_option(cmd.options, self.mesh.get_task, owner=authz.owner_of(ident))
        if not d:
            raise NotAccepted(d.message, d.code)
        too_large = input_too_large(cmd.input, self.limits.max_task_input_bytes)
        if too_large:
            raise NotAccepted(too_large, ErrorCode.INVALID_ARGUMENT)
        try:
            with tracing.span("orchgpt.submit", parent, "SERVER", **{"orchgpt.agent.type": cmd.agent_type}):
                task, _created = self.mesh.submit(cmd, submitted_by=authz.owner_of(ident))
        except StoreError as exc:
            raise NotAccepted(f"not accepted: the store cannot be written: {exc}", exc.code) from None
        return task

    async def SubmitStream(
        self, request_iterator: AsyncIterator[pb.SubmitBatch], context: grpc.aio.ServicerContext
    ) -> None:
        # context.read()/write() as on Connect: less overhead per frame than an async generator
        # (stream: a refusal takes the first frame first, so that the client sees the status, not a failed write)
        ident = await self._authorize(context, "SubmitStream", stream=True)
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        stream = SubmissionStream(outbox, self.max_pending_events, self._type_of)
        cutter = self._guard_stream(context, outbox)
        parent = tracing.from_metadata(context.invocation_metadata()) if tracing.ENABLED else None
        reader = asyncio.create_task(self._read_submissions(ident, context, stream, parent))
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    break
                await context.write(batch)
                stream.frames_out += 1
                if stream._room is not None and not stream.full():
                    stream.wake()
            await self._end_stream(context, outbox)
        except asyncio.CancelledError:
            if not cutter.cut:
                raise
            log.warning("submit_stream_cut", peer=ident.name, reason=outbox.dropped_reason)
            await self._end_stream(context, outbox)
        finally:
            reader.cancel()
            stream.unfollow_all(self.mesh.unsubscribe)
            log.info(
                "submit_stream_closed",
                peer=ident.name,
                submitted=stream.submitted,
                refused=stream.refused,
                frames_in=stream.frames_in,
                frames_out=stream.frames_out,
                envelopes_out=outbox.taken,
                reason=outbox.dropped_reason,
            )

    async def _read_submissions(
        self,
        ident: Identity,
        context: grpc.aio.ServicerContext,
        stream: SubmissionStream,
        parent: tuple[str, str] | None,
    ) -> None:
        outbox = stream.outbox
        frame_no = 0
        try:
            while not outbox.closed:
                if stream.full():
                    await stream.room()
                    continue  # (closed meanwhile: the loop ends)
                frame = await context.read()
                if frame is grpc.aio.EOF:
                    break
                frame_no += 1
                stream.frames_in = frame_no
                if isinstance(frame, Malformed):
                    stream.error("", "INVALID_ARGUMENT", f"frame {frame_no}: {frame.detail}; frame dropped")
                    continue
                subs = frame.submissions
                if len(subs) > MAX_FRAME_SUBMISSIONS:
                    stream.error(
                        "",
                        "INVALID_ARGUMENT",
                        f"frame {frame_no}: {len(subs)} submissions; at most {MAX_FRAME_SUBMISSIONS} "
                        "in one SubmitBatch; frame dropped",
                    )
                    continue
                for i, req in enumerate(subs):
                    if stream.full():  # (inside a frame too: its acknowledgements wait in the outbox)
                        await stream.room()
                    if outbox.closed:
                        return
                    self._submit_one(ident, req, stream, parent, frame_no, i)
            stream.done_reading()
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, grpc.aio.AbortError):
            outbox.close("connection lost")
        except Exception as exc:  # a bug must not take the daemon down, nor leave the stream hanging
            log.exception("submit_stream_error", peer=ident.name, error=str(exc))
            outbox.abort("INTERNAL", f"submission stream error: {exc}")

    def _submit_one(
        self,
        ident: Identity,
        req: pb.SubmitRequest,
        stream: SubmissionStream,
        parent: tuple[str, str] | None,
        frame_no: int,
        index: int,
    ) -> None:
        task_id = req.command.task_id
        where = f"frame {frame_no}, submissions[{index}]"
        bad = validate.request("SubmitStream", req)
        if bad:
            stream.error(task_id if "\x00" not in task_id else "", "INVALID_ARGUMENT", f"{where}: {bad}")
            return
        if not task_id:
            stream.error(
                "",
                "INVALID_ARGUMENT",
                f"{where}: command.task_id is required on SubmitStream (the idempotency key its answers name)",
            )
            return
        try:
            task = self._admit(ident, req, parent)
        except OrchgptError as exc:
            if exc.code == ErrorCode.PERMISSION_DENIED and req.sender and req.sender != ident.name:
                # submitting as someone else ends the stream, as it ends a Submit call
                log.warning("submit_stream_refused", peer=ident.name, sender=req.sender)
                stream.outbox.abort("PERMISSION_DENIED", str(exc))
                return
            stream.error(task_id, exc.code, str(exc))
            return
        stream.follow(task, req.results_only, self.mesh.replay_then_follow)
