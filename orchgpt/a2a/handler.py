"""The A2A request handler of the daemon: a2a-sdk's RequestHandler interface on the Mesh.

Every method runs as the identity of the caller's verified client certificate
(``context.state["identity"]``, put there by the transport) and in one tenant, the agent type.
The authorization is orchgpt.authz's, as on the gRPC Mesh service: a task is visible to its
owner (an admin: to everyone) and only under its own type's tenant; anything else is
TaskNotFound, like a task that does not exist. Tasks live in the mesh store, so they outlive
a daemon restart; a2a-sdk's task store and default handler are not used (they key tasks by id
alone, docs/a2a.md).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    A2AError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from .. import authz, durable, logs
from ..artifacts import ArtifactError, OpenFile, open_artifact, workspace_name
from ..certs import Identity
from ..errors import ErrorCode, RoutingError, StoreError
from ..limits import input_too_large
from ..mesh import AGENT_TYPE_RE, Mesh
from ..models import ApprovalDecision, ApprovalResponse, EventKind, Task, TaskEvent
from . import mapping
from .handler_push import PushConfigs

log = logs.get("orchgpt.a2a")

IDENTITY = "identity"  # ServerCallContext.state key: the caller's orchgpt.certs.Identity
PATH_TENANT = "path_tenant"  # the tenant named by the URL path, if any
INLINE_BYTES = 64 * 1024  # result files up to this size travel inline in the Task
MAX_SCAN = 20_000  # most tasks one ListTasks page reads from the store to fill itself


async def _committed() -> None:
    """Nothing is answered before the commit that holds it (group commit, orchgpt/durable.py)."""
    if durable._open:
        try:
            await durable.settle()
        except StoreError as exc:
            raise InternalError(message=f"not acknowledged: the store could not commit: {exc}") from None


def PermissionDenied(message: str) -> InvalidRequestError:
    """The caller's certificate may not do this: an InvalidRequest (-32600, gRPC INVALID_ARGUMENT;
    A2A has no permission error) whose message starts 'permission denied' and names the rule."""
    text = message if message.startswith("permission denied") else f"permission denied: {message}"
    return InvalidRequestError(message=text)


class _Events:
    """A mesh Subscriber feeding one A2A stream (bounded: a stalled reader is dropped)."""

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()
        self.limit = limit
        self.closed = ""

    def deliver(self, event: TaskEvent) -> bool:
        if self.queue.qsize() >= self.limit:
            return False
        self.queue.put_nowait(event)
        return True

    def close(self, reason: str) -> None:
        self.closed = reason
        self.queue.put_nowait(None)

    def on_revoked(self) -> None:  # orchgpt.revocation.Revocations.track
        self.close("certificate revoked")


class MeshRequestHandler(PushConfigs, RequestHandler):
    def __init__(
        self,
        mesh: Mesh,
        *,
        revocations: Any = None,
        max_task_input_bytes: int = 0,
        max_pending_events: int = 10_000,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.mesh = mesh
        self.revocations = revocations
        self.max_task_input_bytes = max_task_input_bytes
        self.max_pending_events = max_pending_events
        self.accepting = accepting
        self.card: Callable[[str], a2a.AgentCard] | None = None  # the card of a type (tenant)
        self.workspaces: Path | None = None  # the daemon's workspace root (result files)
        self.artifact_url: Callable[[Task, str], str] | None = None  # a large file's URL
        self.push: Any = None  # orchgpt.a2a.push.PushNotifier when --a2a-push is on
        self._answered: dict[str, str] = {}  # task id -> the approval request id answered last

    # ------------------------------------------------------------ who and where
    def _caller(self, context: ServerCallContext, rpc: str) -> Identity:
        ident = context.state.get(IDENTITY)
        if not isinstance(ident, Identity):
            raise PermissionDenied("no client certificate: the mesh CA must sign one")
        if self.revocations is not None:
            refused = self.revocations.check_on_call(ident)
            if refused:
                raise PermissionDenied(refused)
        d = authz.rpc(ident, rpc)
        if not d:
            log.warning("a2a_refused", rpc=rpc, peer=ident.name, role=ident.role, rule=d.rule)
            raise PermissionDenied(d.message)
        return ident

    def _tenant(self, context: ServerCallContext, known: bool = True) -> str:
        """The agent type the request is for. ``known``: it must be a type the mesh runs now
        (to start work, or for a card); reading tasks needs only a well-formed one (a remote
        type whose agents left still has its tasks)."""
        field = context.tenant
        path = str(context.state.get(PATH_TENANT) or "")
        if field and path and field != path:
            raise InvalidParamsError(message=f"tenant: {field!r} differs from the URL's agent type {path!r}")
        tenant = field or path
        if not tenant:
            types = ", ".join(sorted(self.mesh.known_types()))
            raise InvalidParamsError(
                message=f"tenant: name the agent type (one of: {types}); the agent card's interface carries it"
            )
        if not AGENT_TYPE_RE.match(tenant) or (known and tenant not in self.mesh.known_types()):
            raise InvalidParamsError(message=f"tenant: unknown agent type {tenant!r}")
        return tenant

    def _task(self, ident: Identity, rpc: str, task_id: str, tenant: str) -> Task:
        t = self.mesh.get_task(task_id) if task_id else None
        if t is None or t.agent_type != tenant or not authz.task_access(ident, rpc, t, self.mesh.get_task):
            if t is not None:
                log.info("a2a_task_refused", rpc=rpc, peer=ident.name, task_id=task_id, tenant=tenant)
            raise TaskNotFoundError(message=f"no task {task_id!r}")
        return t

    def _waiting(self, t: Task) -> TaskEvent | None:
        """The approval a running task waits for, if its latest event asks one not yet answered."""
        if t.state.terminal or t.task_id not in self.mesh.active:
            return None
        self.mesh.flush()
        evs = self.mesh.store.events(t.task_id, max(0, self.mesh.store.last_seq(t.task_id) - 1))
        last = evs[-1] if evs else None
        if last is None or last.kind != EventKind.APPROVAL:
            return None
        rid = last.approval.request_id if last.approval else str(last.seq)
        return None if self._answered.get(t.task_id) == rid else last

    def _snapshot(self, t: Task, history_length: int | None = None) -> a2a.Task:
        t = self.mesh.get_task(t.task_id) or t
        out = mapping.to_task(t, self._waiting(t), history_length)
        self._files(t, out)
        return out

    def _files(self, t: Task, out: a2a.Task) -> None:
        """The result's files: up to INLINE_BYTES inline (Part.raw), larger ones as a URL on the
        listener; a file not in this daemon's workspace root (a remote agent's) stays a name."""
        if self.workspaces is None:
            return
        for art in out.artifacts:
            if not art.artifact_id.startswith(mapping.FILE_ARTIFACT):
                continue
            path = art.name
            try:
                f = open_artifact(self.workspaces, workspace_name(t, self.mesh.get_task), path)
            except ArtifactError:
                continue
            media = mimetypes.guess_type(path)[0] or "application/octet-stream"
            name = path.rsplit("/", 1)[-1]
            if f.size <= INLINE_BYTES:
                part = a2a.Part(raw=b"".join(f.chunks(64 * 1024)), filename=name, media_type=media)
            else:
                os.close(f.fd)
                if self.artifact_url is None:
                    continue
                part = a2a.Part(url=self.artifact_url(t, path), filename=name, media_type=media)
            del art.parts[:]
            art.parts.append(part)

    def open_file(self, context: ServerCallContext, task_id: str, path: str) -> OpenFile:
        """A file of a task the caller may fetch (FetchArtifact's rules, docs/security.md)."""
        ident = self._caller(context, "FetchArtifact")
        t = self._task(ident, "FetchArtifact", task_id, self._tenant(context, known=False))
        if self.workspaces is None:
            raise TaskNotFoundError(message=f"no file {path!r} of task {task_id!r} here")
        try:
            return open_artifact(self.workspaces, workspace_name(t, self.mesh.get_task), path)
        except ArtifactError as exc:
            if exc.code == ErrorCode.INVALID_ARGUMENT:
                raise InvalidParamsError(message=str(exc)) from None
            if exc.code == ErrorCode.PERMISSION_DENIED:
                raise PermissionDenied(str(exc)) from None
            raise TaskNotFoundError(message=str(exc)) from None

    # ------------------------------------------------------------ messages
    def _start(self, params: a2a.SendMessageRequest, context: ServerCallContext) -> tuple[Task, bool]:
        """(task, is_new): a new task from the message, or the INPUT_REQUIRED task it answers."""
        if not self.accepting():
            raise InternalError(message="orchgpt is shutting down; not accepting new work")
        tenant = self._tenant(context)
        msg = params.message
        if msg.task_id:
            ident = self._caller(context, "Approve")
            t = self._task(ident, "Approve", msg.task_id, tenant)
            self._answer(t, params)
            return t, False
        ident = self._caller(context, "Submit")
        try:
            cmd = mapping.command_from_message(params, tenant)
        except mapping.MappingError as exc:
            raise InvalidParamsError(message=str(exc)) from None
        too_large = input_too_large(cmd.input, self.max_task_input_bytes, "message.parts")
        if too_large:
            raise InvalidParamsError(message=too_large)
        d = self._submit_access(ident, cmd.session_id)
        if d and authz.principal(ident) != authz.ADMIN:
            d = authz.workspace_option(cmd.options, self.mesh.get_task, owner=authz.owner_of(ident))
        if not d:
            raise PermissionDenied(d.message)
        try:
            task, _ = self.mesh.submit(cmd, submitted_by=authz.owner_of(ident))
        except RoutingError as exc:
            if exc.code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND):
                raise InvalidParamsError(message=str(exc)) from None
            raise InvalidRequestError(message=f"{exc.code}: {exc}") from None
        except StoreError as exc:
            raise InternalError(message=f"not accepted: the store cannot be written: {exc}") from None
        log.info("a2a_task_started", task_id=task.task_id, agent_type=tenant, peer=ident.name)
        return task, True

    def _submit_access(self, ident: Identity, session_id: str) -> authz.Decision:
        store = self.mesh.store
        exists = bool(session_id) and bool(store.list_tasks(1, session_id, True))
        owned = bool(session_id) and bool(store.list_tasks(1, session_id, True, authz.owner_of(ident)))
        return authz.submit_access(ident, None, self.mesh.get_task, session_id, exists, owned)

    def _answer(self, t: Task, params: a2a.SendMessageRequest) -> None:
        waiting = self._waiting(t)
        if waiting is None:
            state = "finished" if t.state.terminal else "not waiting for input"
            raise UnsupportedOperationError(
                message=f"task {t.task_id!r} is {state}: send a message without task_id to start a new one"
            )
        try:
            decision, feedback = mapping.approval_answer(params)
        except mapping.MappingError as exc:
            raise InvalidParamsError(message=str(exc)) from None
        rid = waiting.approval.request_id if waiting.approval else str(waiting.seq)
        try:
            self.mesh.approve(t.task_id, ApprovalResponse(rid, ApprovalDecision(decision), feedback=feedback))
        except RoutingError as exc:
            raise TaskNotFoundError(message=str(exc)) from None
        self._answered[t.task_id] = rid
        if len(self._answered) > 10_000:
            self._answered.pop(next(iter(self._answered)))

    async def on_message_send(self, params: a2a.SendMessageRequest, context: ServerCallContext) -> a2a.Task:
        task, new = await self._start_with_push(params, context)
        if params.configuration.return_immediately:
            await _committed()
            return self._snapshot(task)
        after = 0 if new else self.mesh.store.last_seq(task.task_id)
        async for ev in self._follow(task, after, context.state[IDENTITY]):
            if isinstance(ev, a2a.TaskStatusUpdateEvent) and (
                ev.status.state in mapping.TERMINAL or ev.status.state == a2a.TASK_STATE_INPUT_REQUIRED
            ):
                break
        await _committed()
        return self._snapshot(task)

    async def on_message_send_stream(
        self, params: a2a.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        task, new = await self._start_with_push(params, context)
        first = self._snapshot(task)
        if new:  # the stream replays the task's events from its start: it starts SUBMITTED
            first.status.state = a2a.TASK_STATE_SUBMITTED
            first.status.ClearField("message")
        await _committed()
        yield first
        after = 0 if new else self.mesh.store.last_seq(task.task_id)
        async for ev in self._follow(task, after, context.state[IDENTITY]):
            yield ev

    async def _follow(self, task: Task, after_seq: int, ident: Identity) -> AsyncGenerator[Any]:
        """A2A events of the task: its stored events after ``after_seq``, then the live ones
        (subscribed with no await in between, so none is missed or doubled), up to the result."""
        mesh = self.mesh
        sub = _Events(self.max_pending_events)
        mesh.flush()
        stored = mesh.store.events(task.task_id, after_seq)
        live = task.task_id in mesh.active
        if live:
            mesh.subscribe(sub, task.task_id)
            if self.revocations is not None:  # a revoked caller's stream is closed at once
                self.revocations.track(ident.serial, sub)
        appended = after_seq > 0 and any(
            e.kind == EventKind.TOKEN for e in mesh.store.events(task.task_id, 0, after_seq)
        )
        try:
            pending = deque(stored)
            while True:
                if pending:
                    ev = pending.popleft()
                elif not live:
                    ev = None
                else:
                    ev = await sub.queue.get()
                if ev is None:
                    if live and sub.closed:
                        raise InternalError(message=f"stream ended: {sub.closed}")
                    return
                if ev.task_id != task.task_id:
                    continue  # a sub-task's event: the A2A task is the root
                for out in mapping.stream_events(ev, mesh.get_task(task.task_id) or task, appended):
                    await _committed()
                    yield out
                if ev.kind == EventKind.TOKEN:
                    appended = True
                if ev.kind in (EventKind.RESULT, EventKind.APPROVAL):
                    return  # final, or interrupted (INPUT_REQUIRED): A2A ends the stream here
        finally:
            if live:
                mesh.unsubscribe(sub, task.task_id)

    # ------------------------------------------------------------ tasks
    async def on_get_task(self, params: a2a.GetTaskRequest, context: ServerCallContext) -> a2a.Task | None:
        ident = self._caller(context, "GetTask")
        t = self._task(ident, "GetTask", params.id, self._tenant(context, known=False))
        hl = params.history_length if params.HasField("history_length") else None
        return self._snapshot(t, hl)

    async def on_list_tasks(self, params: a2a.ListTasksRequest, context: ServerCallContext) -> a2a.ListTasksResponse:
        ident = self._caller(context, "ListTasks")
        tenant = self._tenant(context, known=False)
        size = min(max(params.page_size, 0) or 50, 100)
        token = params.page_token
        offset = 0 if not token else int(token) if token.isdigit() and len(token) < 10 else -1
        if offset < 0 or (token and offset == 0):
            raise InvalidParamsError(message="page_token: not a next_page_token from ListTasks")

        def wanted(t: Task) -> bool:
            if t.agent_type != tenant:
                return False
            t = self.mesh.active.get(t.task_id, t)
            return not params.status or mapping.a2a_state(t.state, self._waiting(t) is not None) == params.status

        # the store filters by owner (and session); the type and state are filtered here,
        # reading more rows until the page is full or the store has no more (at most MAX_SCAN)
        owner = authz.list_owner(ident, "ListTasks")
        want, limit = offset + size + 1, 2 * (offset + size) + 50
        while True:
            raw = self.mesh.store.list_tasks(min(limit, MAX_SCAN), params.context_id, False, owner)
            rows = [t for t in raw if wanted(t)]
            if len(rows) >= want or len(raw) < min(limit, MAX_SCAN) or limit >= MAX_SCAN:
                break
            limit *= 4
        page = rows[offset : offset + size]
        resp = a2a.ListTasksResponse(page_size=size)
        if len(raw) < min(limit, MAX_SCAN):
            resp.total_size = len(rows)  # the store had no more: the count is exact
        for t in page:
            snap = self._snapshot(
                self.mesh.active.get(t.task_id, t),
                params.history_length if params.HasField("history_length") else 0,
            )
            if not params.include_artifacts:
                del snap.artifacts[:]
            resp.tasks.append(snap)
        if len(rows) > offset + size:
            resp.next_page_token = str(offset + size)
        return resp

    async def on_cancel_task(self, params: a2a.CancelTaskRequest, context: ServerCallContext) -> a2a.Task | None:
        ident = self._caller(context, "CancelTask")
        t = self._task(ident, "CancelTask", params.id, self._tenant(context, known=False))
        if t.state.terminal:
            raise TaskNotCancelableError(message=f"task {t.task_id!r} is {t.state} already")
        try:
            t = self.mesh.cancel(t.task_id, f"cancelled over A2A by {ident.name}")
        except RoutingError as exc:
            raise TaskNotFoundError(message=str(exc)) from None
        log.info("a2a_task_cancelled", task_id=t.task_id, peer=ident.name)
        await _committed()
        return self._snapshot(t)

    async def on_subscribe_to_task(
        self, params: a2a.SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        ident = self._caller(context, "Watch(task)")
        t = self._task(ident, "Watch(task)", params.id, self._tenant(context, known=False))
        if t.state.terminal:
            raise UnsupportedOperationError(message=f"task {t.task_id!r} is {t.state}: nothing to subscribe to")
        await _committed()
        yield self._snapshot(t)
        async for ev in self._follow(t, self.mesh.store.last_seq(t.task_id), ident):
            yield ev

    async def on_get_extended_agent_card(self, params: Any, context: ServerCallContext) -> a2a.AgentCard:
        """The tenant's card, to an authenticated caller (how a gRPC-only client gets it)."""
        self._caller(context, "ListAgents")
        tenant = self._tenant(context)
        if self.card is None:
            raise ExtendedAgentCardNotConfiguredError(message="no agent cards here")
        return self.card(tenant)


__all__ = ["IDENTITY", "PATH_TENANT", "A2AError", "MeshRequestHandler", "PermissionDenied"]
