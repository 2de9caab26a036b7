"""The Schedules gRPC service (schedules.proto, docs/schedules.md): add, list, show, pause,
resume and delete a client's schedules. Protobuf stops here: the schedules are domain objects
(orchgpt/schedules.py) kept in the store; the daemon's scheduler (orchgpt/scheduler.py) fires
them. Owner-scoped like tasks (orchgpt/authz.py): another owner's schedule is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

import grpc

from . import authz, logs, validate
from .certs import Identity
from .errors import RoutingError, StoreError
from .iac.v1 import schedules_pb2 as spb
from .iac.v1 import schedules_pb2_grpc as spb_grpc
from .limits import input_too_large
from .models import new_id, now_ms
from .schedules import (
    ACTIVE,
    CATCH_UP,
    MAX_SCHEDULES_PER_OWNER,
    PAUSED,
    Cron,
    Schedule,
    ScheduleError,
)
from .status import to_grpc
from .task_options import task_options
from .wire import codec
from .wire.schedules import run_to_pb, schedule_to_pb

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .servicer import MeshServicer

log = logs.get("orchgpt.schedules")
T = TypeVar("T")


class ScheduleRpcs(spb_grpc.SchedulesServicer):
    def __init__(self, mesh_servicer: MeshServicer, scheduler: Scheduler) -> None:
        self.rpcs = mesh_servicer  # identity, authorization, limits: shared with the Mesh service
        self.mesh = mesh_servicer.mesh
        self.store = self.mesh.store
        self.scheduler = scheduler

    async def _abort(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        await context.abort(code, message)
        raise AssertionError("unreachable")

    async def _store_call(self, context: grpc.aio.ServicerContext, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StoreError as exc:
            await self._abort(context, grpc.StatusCode.UNAVAILABLE, f"{what}: the store: {exc}")
            raise

    async def _mine(self, context: grpc.aio.ServicerContext, ident: Identity, rpc: str, ref: str) -> Schedule:
        """The caller's schedule by id or unique prefix; NOT_FOUND for another owner's."""
        bad = validate._id(ref, "schedule_id")
        if bad or not ref:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, bad or "schedule_id: required")
        owner = authz.list_owner(ident, rpc)
        s = self.store.get_schedule(ref)
        if s is not None and (owner is None or s.owner == owner):
            return s
        hits = [x for x in self.store.list_schedules(owner) if x.schedule_id.startswith(ref)]
        if len(hits) > 1:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"schedule_id: {ref!r} starts {len(hits)} schedules; give more of it",
            )
        if not hits:
            log.info("schedule_access_refused", rpc=rpc, peer=ident.name, schedule_id=ref)
            await self._abort(context, grpc.StatusCode.NOT_FOUND, f"no schedule {ref!r}")
        return hits[0]

    async def AddSchedule(self, request: spb.AddScheduleRequest, context: grpc.aio.ServicerContext) -> spb.Schedule:
        ident = await self.rpcs._authorize(context, "AddSchedule")
        if not self.rpcs.accepting:
            await self._abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "orchgpt is shutting down; not accepting new work",
            )
        try:
            cron = Cron(request.cron, request.timezone or "UTC")
            catch_up = request.catch_up or CATCH_UP[0]
            if catch_up not in CATCH_UP:
                raise ScheduleError(f"catch_up: {catch_up!r}; expected once or skip")
            if not request.HasField("command"):
                raise ScheduleError("command: required (the agent command each run submits)")
            bad = validate.command(request.command, "command")
            if bad:
                raise ScheduleError(bad)
            cmd = codec.command_from_pb(request.command)
        except (ScheduleError, codec.DecodeError) as exc:
            msg = str(exc) if isinstance(exc, ScheduleError) else f"command: {exc}"
            await self._abort(context, to_grpc(exc.code), msg)  # INVALID_ARGUMENT, both
        if cmd.task_id or cmd.session_id:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "command.task_id, command.session_id: leave them empty; every run "
                "gets its own task id (SCHEDULE-TICK) and session",
            )
        too_large = input_too_large(cmd.input, self.rpcs.limits.max_task_input_bytes)
        if too_large:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"command: {too_large}")
        owner = authz.owner_of(ident)
        if authz.principal(ident) != authz.ADMIN:
            d = authz.workspace_option(cmd.options, self.mesh.get_task, owner=owner)
            if not d:
                await self._abort(context, grpc.StatusCode.PERMISSION_DENIED, d.message)
        known = self.mesh.known_types()
        if cmd.agent_type not in known:
            await self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"command.agent_type: unknown agent type {cmd.agent_type!r}; known "
                f"types: {', '.join(sorted(known)) or 'none'}",
            )
        try:  # the graph (the owner's) or workflow it names must exist, as at each run
            probe = replace(cmd, options=dict(cmd.options))
            task_options(self.store, self.rpcs.workflows, known, probe, owner)
        except RoutingError as exc:
            code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN)
            await self._abort(context, code, f"command: {exc}")
        mine = self.store.list_schedules(owner, limit=MAX_SCHEDULES_PER_OWNER + 1)
        if len(mine) >= MAX_SCHEDULES_PER_OWNER:
            await self._abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{owner} has {len(mine)} schedules, the most one owner may have; delete some first",
            )
        now = now_ms()
        s = Schedule(
            new_id(),
            owner,
            cron.expr,
            cmd,
            timezone=request.timezone or "UTC",
            catch_up=catch_up,
            state=ACTIVE,
            created_ms=now,
            updated_ms=now,
            next_run_ms=cron.next_after(now),
        )
        await self._store_call(context, "AddSchedule", lambda: self.store.add_schedule(s))
        log.info(
            "schedule_added",
            schedule_id=s.schedule_id,
            owner=owner,
            cron=s.cron,
            timezone=s.timezone,
            agent_type=cmd.agent_type,
            catch_up=catch_up,
            next_run_ms=s.next_run_ms,
        )
        self.scheduler.wake()
        return schedule_to_pb(s)

    async def ListSchedules(
        self, request: spb.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> spb.ListSchedulesResponse:
        ident = await self.rpcs._authorize(context, "ListSchedules")
        owner = authz.list_owner(ident, "ListSchedules")
        found = self.store.list_schedules(owner)
        return spb.ListSchedulesResponse(schedules=[schedule_to_pb(s) for s in found])

    async def GetSchedule(
        self, request: spb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> spb.GetScheduleResponse:
        ident = await self.rpcs._authorize(context, "GetSchedule")
        s = await self._mine(context, ident, "GetSchedule", request.schedule_id)
        limit = min(max(request.history_limit, 0) or 20, 1000)
        runs = self.store.schedule_runs(s.schedule_id, limit)
        for r in runs:
            t = self.mesh.get_task(r.task_id) if r.task_id else None
            r.task_state = str(t.state) if t is not None else ""
        return spb.GetScheduleResponse(schedule=schedule_to_pb(s), runs=[run_to_pb(r) for r in runs])

    async def _set_state(
        self, request: spb.ScheduleRequest, context: grpc.aio.ServicerContext, rpc: str, state: str
    ) -> spb.Schedule:
        ident = await self.rpcs._authorize(context, rpc)
        s = await self._mine(context, ident, rpc, request.schedule_id)
        if s.state == state:
            return schedule_to_pb(s)
        # resuming starts from the next tick after now: a paused period is not caught up
        nxt = Cron(s.cron, s.timezone).next_after(now_ms()) if state == ACTIVE else 0
        after = await self._store_call(context, rpc, lambda: self.store.set_schedule_state(s.schedule_id, state, nxt))
        if after is None:
            await self._abort(context, grpc.StatusCode.NOT_FOUND, f"no schedule {s.schedule_id!r}")
        log.info("schedule_" + state, schedule_id=s.schedule_id, peer=ident.name, next_run_ms=nxt)
        self.scheduler.wake()
        return schedule_to_pb(after)  # type: ignore[arg-type]

    async def PauseSchedule(self, request: spb.ScheduleRequest, context: grpc.aio.ServicerContext) -> spb.Schedule:
        return await self._set_state(request, context, "PauseSchedule", PAUSED)

    async def ResumeSchedule(self, request: spb.ScheduleRequest, context: grpc.aio.ServicerContext) -> spb.Schedule:
        return await self._set_state(request, context, "ResumeSchedule", ACTIVE)

    async def DeleteSchedule(
        self, request: spb.ScheduleRequest, context: grpc.aio.ServicerContext
    ) -> spb.DeleteScheduleResponse:
        ident = await self.rpcs._authorize(context, "DeleteSchedule")
        s = await self._mine(context, ident, "DeleteSchedule", request.schedule_id)
        await self._store_call(context, "DeleteSchedule", lambda: self.store.delete_schedule(s.schedule_id))
        log.info("schedule_deleted", schedule_id=s.schedule_id, peer=ident.name)
        self.scheduler.wake()
        return spb.DeleteScheduleResponse()


SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Schedules"].full_name


def add_schedules_service(mesh_servicer: MeshServicer, server: grpc.aio.Server, scheduler: Scheduler) -> str:
    """Serve Schedules on ``server`` (before it starts), behind the same wire guard as Mesh;
    returns the service name (for reflection)."""
    from .wire_guard import add_mesh_servicer

    add_mesh_servicer(ScheduleRpcs(mesh_servicer, scheduler), server, spb_grpc.add_SchedulesServicer_to_server)
    return SERVICE_NAME
