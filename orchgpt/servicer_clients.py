"""The clients' side of the gRPC servicer: Submit, Watch and the task, session and
artifact RPCs, and the subscriptions that push a task's events to a client.

Everything here speaks protobuf and converts at the edge (codec.py); the decisions
are made by mesh.Mesh, reached through its methods only.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

import grpc

from . import authz, codec, logs, tracing
from .artifacts import ArtifactError, open_artifact, workspace_name
from .batching import Outbox
from .errors import OrchgptError, RoutingError, StoreError
from .iac.v1 import iac_pb2 as pb
from .input_access import input_task
from .limits import (
    page_tasks,
    parse_page_token,
)
from .mesh import LOCAL_PREFIX
from .models import TaskEvent
from .servicer_base import FILE_CHUNK
from .servicer_submit import SubmitRpcs
from .status import to_grpc
from .wire.coalesce import TokenCoalescer

log = logs.get("orchgpt.servicer")


def _event_envelope(event: TaskEvent, type_of: Callable[[str], str]) -> pb.Envelope:
    """The TASK_EVENT envelope of an event; an agent's own event is re-stamped from the wire
    form kept on arrival (codec.encode_event), not encoded again: token deltas are the hot path."""
    return codec.event_envelope(event, agent_type=event.agent_type or type_of(event.task_id))


class EventSubscription:
    """A client's view of task events, pushed into an outbox as TASK_EVENT envelopes."""

    def __init__(
        self,
        outbox: Outbox,
        limit: int,
        end_task: str = "",
        type_of: Callable[[str], str] = lambda task_id: "",
        visible: Callable[[str], bool] | None = None,
    ) -> None:
        self.outbox = outbox
        self.limit = limit
        self.end_task = end_task
        self.overflowed = False
        self.type_of = type_of  # task id -> agent type (TaskEvent.agent_type)
        self.visible = visible  # task id -> may this subscriber see it (Watch of every task)
        self.tokens = TokenCoalescer()  # a watcher that is behind gets token deltas folded

    def deliver(self, event: TaskEvent) -> bool:
        if self.visible is not None and not self.visible(event.task_id):
            return True
        if self.tokens.fold(self.outbox, event):
            return True
        if len(self.outbox) >= self.limit:
            self.overflowed = True  # the stream ends with RESOURCE_EXHAUSTED (_end_stream)
            self.outbox.abort(
                "RESOURCE_EXHAUSTED",
                f"client too slow: {self.limit} events pending (max_pending_events); watch again with after_seq",
            )
            return False
        env = _event_envelope(event, self.type_of)
        if event.kind == "token":  # acknowledges nothing: not held by an open commit window
            self.outbox.put_live(env)
        else:
            self.outbox.put(env)
        self.tokens.queued(self.outbox, event, env)
        if self.end_task and event.task_id == self.end_task and event.kind == "result":
            self.outbox.close("task finished")
        return True

    def close(self, reason: str) -> None:
        if not self.end_task or self.overflowed:
            self.outbox.close(reason)


class ClientRpcs(SubmitRpcs):
    """The RPCs of clients (part of servicer.MeshServicer)."""

    async def Submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Batch]:
        ident = await self._authorize(context, "Submit")
        parent = tracing.from_metadata(context.invocation_metadata()) if tracing.ENABLED else None
        try:
            task = self._admit(ident, request, parent)  # (servicer_submit.py: SubmitStream's checks too)
        except OrchgptError as exc:
            await self._abort_error(context, exc)
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        self._guard_stream(context, outbox)
        async for b in self._follow(task.task_id, 0, outbox, task.agent_type):
            yield b
        await self._end_stream(context, outbox)

    async def _follow(
        self, task_id: str, after_seq: int, outbox: Outbox, agent_type: str = ""
    ) -> AsyncIterator[pb.Batch]:
        """Replay the stored events after ``after_seq``, then follow live ones (no await in between,
        so nothing is missed or doubled)."""
        sub = EventSubscription(outbox, self.max_pending_events, end_task=task_id, type_of=self._type_of)
        mesh = self.mesh
        replay, following = mesh.replay_then_follow(task_id, after_seq, sub)
        for ev in replay:
            outbox.put(codec.event_envelope(ev, agent_type=agent_type))
        if not following:
            outbox.close("task finished")
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    break
                yield batch
        finally:
            mesh.unsubscribe(sub, task_id)

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Batch]:
        outbox = Outbox(max_bytes=self.max_message_bytes // 2)
        self._guard_stream(context, outbox)
        if request.task_id:
            ident = await self._authorize(context, "Watch(task)")
            watched = await self._task_for(context, ident, "Watch(task)", request.task_id)
            async for b in self._follow(request.task_id, request.after_seq, outbox, watched.agent_type):
                yield b
            await self._end_stream(context, outbox)
            return
        ident = await self._authorize(context, "Watch(all)")
        owner = authz.list_owner(ident, "Watch(all)")
        sub = EventSubscription(
            outbox,
            self.max_pending_events,
            type_of=self._type_of,
            visible=None if owner is None else self._owned_by(owner),
        )
        self.mesh.subscribe(sub)
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    await self._end_stream(context, outbox)
                    if sub.overflowed:
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED, "client too slow: event buffer full; watch again"
                        )
                    break
                yield batch
        finally:
            self.mesh.unsubscribe(sub)

    def _owned_by(self, owner: str) -> Callable[[str], bool]:
        seen: dict[str, bool] = {}
        get = self.mesh.get_task

        def visible(task_id: str) -> bool:
            ok = seen.get(task_id)
            if ok is None:
                t = get(task_id)
                ok = t is not None and authz.owns(owner, t, get)
                if len(seen) > 10_000:
                    seen.clear()
                seen[task_id] = ok
            return ok

        return visible

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        await self._authorize(context, "ListAgents")
        return pb.ListAgentsResponse(
            agents=[codec.agent_to_pb(a) for a in self.mesh.list_agents(request.agent_type)],
            declared=self._declared_listing(request.agent_type),
        )

    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.GetTaskResponse:
        ident = await self._authorize(context, "GetTask")
        t = await self._task_for(context, ident, "GetTask", request.task_id)
        resp = pb.GetTaskResponse(task=codec.task_to_pb(t))
        if request.with_events:
            resp.events.extend(codec.event_to_pb(e, t.agent_type) for e in self.mesh.replay(t.task_id))
        found = self.mesh.task_with_children(t.task_id)
        children = found[1] if found is not None else []
        resp.children.extend(codec.task_to_pb(c) for c in children)
        return resp

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        ident = await self._authorize(context, "ListTasks")
        offset = parse_page_token(request.page_token)
        if offset is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a next_page_token from ListTasks")
        assert offset is not None
        limit = min(max(request.limit, 0) or 50, 1000)  # one page; next_page_token goes on
        tasks = self.mesh.list_tasks(
            offset + limit + 1, request.session_id, request.include_children, owner=authz.list_owner(ident, "ListTasks")
        )
        out = tasks[offset : offset + limit]
        page, token = page_tasks(
            (codec.task_to_pb(t) for t in out),
            offset,
            self.limits.list_page_bytes,
            self.limits.list_field_bytes,
            more=len(tasks) > offset + limit,
        )
        return pb.ListTasksResponse(tasks=page, next_page_token=token)

    async def CancelTask(self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext) -> pb.TaskInfo:
        ident = await self._authorize(context, "CancelTask")
        await self._task_for(context, ident, "CancelTask", request.task_id)
        try:
            t = self.mesh.cancel(request.task_id, request.reason)
        except RoutingError as exc:
            await self._abort_error(context, exc)
        return codec.task_to_pb(t)

    async def Approve(self, request: pb.ApproveRequest, context: grpc.aio.ServicerContext) -> pb.ApproveResponse:
        ident = await self._authorize(context, "Approve")
        await self._task_for(context, ident, "Approve", request.task_id)
        try:
            self.mesh.approve(request.task_id, codec.approval_response_from_pb(request.response))
        except codec.DecodeError as exc:
            await self._abort_error(context, exc)
        except RoutingError as exc:
            await self._abort_error(context, exc)
        return pb.ApproveResponse()

    async def FetchArtifact(
        self, request: pb.FetchArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FileChunk]:
        """A file of a task: from the artifact store when uploaded (orchgpt.artifact_store), else
        from the daemon's own workspace root only (orchgpt.artifacts): the workspace an agent
        reported in its result is a label, never a path opened here."""
        ident = await self._authorize(context, "FetchArtifact")
        # an agent may also read the inputs of a task it runs (orchgpt.input_access)
        t = input_task(ident, request.task_id, self.mesh.tasks_on, self.mesh.get_task) or await self._task_for(
            context, ident, "FetchArtifact", request.task_id
        )
        try:
            # uploaded by the agent that ran it (any host: the artifact store), else this host's workspace
            store = self.artifact_store
            f = await store.open_reader(t.task_id, request.path) if store is not None else None
            if f is None:
                if self.workspaces is None:
                    raise ArtifactError(f"task {t.task_id!r} has no workspace on this host", "NOT_FOUND")
                f = open_artifact(self.workspaces, workspace_name(t, self.mesh.get_task), request.path)
        except ArtifactError as exc:
            msg = str(exc)
            if exc.code == "NOT_FOUND" and t.agent_id and not t.agent_id.startswith(LOCAL_PREFIX):
                msg += (
                    f"; task {t.task_id} ran on agent {t.agent_id}, which uploaded no such file "
                    "to the artifact store (nor is it in this host's workspace)"
                )
            elif exc.code == "NOT_FOUND":
                msg += f" in the workspace of task {t.task_id} on this host"
            log.info("artifact_refused", task_id=t.task_id, peer=ident.name, code=exc.code)
            await context.abort(to_grpc(exc.code), msg)
            raise AssertionError("unreachable") from None
        size = f.size
        h = hashlib.sha256()
        offset = 0
        try:
            async with contextlib.aclosing(f.stream(FILE_CHUNK)) as pieces:
                async for data in pieces:
                    h.update(data)
                    last = offset + len(data) >= size or not data
                    sha = h.hexdigest() if last else ""
                    yield pb.FileChunk(path=request.path, offset=offset, data=data, eof=last, size=size, sha256=sha)
                    offset += len(data)
                    if last:
                        break
        except ArtifactError as exc:  # a blob in the database found damaged, or the database gone
            await context.abort(to_grpc(exc.code), str(exc))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        ident = await self._authorize(context, "ListSessions")
        # the gallery (published sessions) is every client's; otherwise a client's own sessions
        owner = None if request.published_only else authz.list_owner(ident, "ListSessions")
        ss = self.mesh.list_sessions(request.limit or 50, request.published_only, owner=owner)
        return pb.ListSessionsResponse(sessions=[codec.session_to_pb(s) for s in ss])

    async def PublishSession(
        self, request: pb.PublishSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishSessionResponse:
        ident = await self._authorize(context, "PublishSession")
        owned = self.mesh.session_exists(request.session_id, authz.list_owner(ident, "PublishSession"))
        if not owned:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r}")
        try:
            s = self.mesh.publish_session(request.session_id, list(request.tags))
        except StoreError as exc:  # NOT_FOUND for a session that is gone by now
            await self._abort_error(context, exc)
        return pb.PublishSessionResponse(session=codec.session_to_pb(s))
