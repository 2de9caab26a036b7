"""The workflow and session-operation RPCs (part of servicer.MeshServicer): ListWorkflows,
GetWorkflow, ListMessages, DeleteMessage, ClearSession, DeleteSession.

Sessions are the caller's own (orchgpt.authz: another user's session or message is NOT_FOUND,
as one that does not exist); an admin acts on everyone's.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from . import authz, logs
from .certs import Identity
from .errors import StoreError
from .iac.v1 import iac_pb2 as pb
from .models import SessionMessage
from .servicer_base import ServicerBase
from .workflows import Workflow, WorkflowBook

log = logs.get("orchgpt.servicer")


def workflow_to_pb(wf: Workflow, path: str = "") -> pb.WorkflowInfo:
    return pb.WorkflowInfo(
        name=wf.name,
        type=wf.type,
        description=wf.description,
        agents=[p.name for p in wf.participants],
        definition_json=wf.to_json(),
        path=path,
    )


def message_to_pb(m: SessionMessage) -> pb.SessionMessage:
    return pb.SessionMessage(
        message_id=m.message_id,
        session_id=m.session_id,
        task_id=m.task_id,
        speaker=m.speaker,
        role=m.role,
        content=m.content,
        ts_ms=m.ts_ms,
    )


class WorkflowRpcs(ServicerBase):
    workflows: WorkflowBook | None = None  # the server sets it (--workflows-dir)

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowsResponse:
        await self._authorize(context, "ListWorkflows")
        book = self.workflows
        if book is None:
            return pb.ListWorkflowsResponse()
        book.refresh()
        return pb.ListWorkflowsResponse(
            workflows=[workflow_to_pb(book.workflows[n], str(book.paths.get(n, ""))) for n in book.names()],
            errors=book.errors,
        )

    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.WorkflowInfo:
        await self._authorize(context, "GetWorkflow")
        book = self.workflows
        if book is not None:
            book.refresh()
        wf = book.get(request.name) if book is not None else None
        if wf is None or book is None:
            names = ", ".join(book.names()) if book is not None else ""
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no workflow {request.name!r}; workflows: {names or 'none'}",
            )
            raise AssertionError("unreachable")
        return workflow_to_pb(wf, str(book.paths.get(wf.name, "")))

    async def _own_session(self, context: grpc.aio.ServicerContext, ident: Identity, rpc: str, session_id: str) -> None:
        owner = authz.list_owner(ident, rpc)
        if not session_id or not self.mesh.session_exists(session_id, owner):
            log.info("session_access_refused", rpc=rpc, peer=ident.name, session_id=session_id)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {session_id!r}")

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        ident = await self._authorize(context, "ListMessages")
        await self._own_session(context, ident, "ListMessages", request.session_id)
        limit = min(max(request.limit, 0) or 1000, 10_000)
        try:
            msgs = self.mesh.store.session_messages(request.session_id, limit)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise AssertionError("unreachable") from None
        return pb.ListMessagesResponse(messages=[message_to_pb(m) for m in msgs])

    async def DeleteMessage(
        self, request: pb.DeleteMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SessionChangeResponse:
        ident = await self._authorize(context, "DeleteMessage")
        try:
            m = self.mesh.store.get_session_message(request.message_id) if request.message_id else None
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise AssertionError("unreachable") from None
        owner = authz.list_owner(ident, "DeleteMessage")
        if m is None or not self.mesh.session_exists(m.session_id, owner):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no message {request.message_id!r}")
            raise AssertionError("unreachable")
        n = await self._change(context, lambda: self.mesh.store.delete_session_message(m.message_id))
        log.info("message_deleted", message_id=m.message_id, session_id=m.session_id, peer=ident.name)
        return pb.SessionChangeResponse(deleted=n)

    async def ClearSession(self, request: pb.SessionRef, context: grpc.aio.ServicerContext) -> pb.SessionChangeResponse:
        ident = await self._authorize(context, "ClearSession")
        await self._own_session(context, ident, "ClearSession", request.session_id)
        n = await self._change(context, lambda: self.mesh.store.clear_session(request.session_id))
        log.info("session_cleared", session_id=request.session_id, messages=n, peer=ident.name)
        return pb.SessionChangeResponse(deleted=n)

    async def DeleteSession(
        self, request: pb.SessionRef, context: grpc.aio.ServicerContext
    ) -> pb.SessionChangeResponse:
        ident = await self._authorize(context, "DeleteSession")
        await self._own_session(context, ident, "DeleteSession", request.session_id)
        running = [t.task_id for t in self.mesh.active.values() if t.session_id == request.session_id]
        if running:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {request.session_id!r} has {len(running)} unfinished task(s) "
                f"({', '.join(running[:3])}); cancel them first",
            )
        n = await self._change(context, lambda: self.mesh.store.delete_session(request.session_id))
        log.info("session_deleted", session_id=request.session_id, removed=n, peer=ident.name)
        return pb.SessionChangeResponse(deleted=n)

    async def _change(self, context: grpc.aio.ServicerContext, do: Callable[[], int]) -> int:
        try:
            return do()
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the store cannot be written: {exc}")
            raise AssertionError("unreachable") from None
