"""The client side of the Schedules service (schedules.proto): part of client.MeshClient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .iac.v1 import schedules_pb2 as spb
from .iac.v1 import schedules_pb2_grpc as spb_grpc
from .models import Command
from .schedules import Schedule, ScheduleRun
from .wire import codec
from .wire.schedules import run_from_pb, schedule_from_pb

if TYPE_CHECKING:
    import grpc


class ScheduleCalls:
    """Schedules: add, list, show (with the run history), pause, resume, delete."""

    if TYPE_CHECKING:
        _channel: grpc.aio.Channel

        async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any: ...

    _schedules_stub: spb_grpc.SchedulesStub | None = None

    @property
    def _sched(self) -> spb_grpc.SchedulesStub:
        if self._schedules_stub is None:
            self._schedules_stub = spb_grpc.SchedulesStub(self._channel)
        return self._schedules_stub

    async def add_schedule(self, cron: str, command: Command, timezone: str = "", catch_up: str = "") -> Schedule:
        req = spb.AddScheduleRequest(
            cron=cron, timezone=timezone, catch_up=catch_up, command=codec.command_to_pb(command)
        )
        return schedule_from_pb(await self._unary(self._sched.AddSchedule, req))

    async def list_schedules(self) -> list[Schedule]:
        resp = await self._unary(self._sched.ListSchedules, spb.ListSchedulesRequest())
        return [schedule_from_pb(s) for s in resp.schedules]

    async def get_schedule(self, schedule_id: str, history: int = 20) -> tuple[Schedule, list[ScheduleRun]]:
        req = spb.GetScheduleRequest(schedule_id=schedule_id, history_limit=history)
        resp = await self._unary(self._sched.GetSchedule, req)
        s = schedule_from_pb(resp.schedule)
        return s, [run_from_pb(r, s.schedule_id) for r in resp.runs]

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        req = spb.ScheduleRequest(schedule_id=schedule_id)
        return schedule_from_pb(await self._unary(self._sched.PauseSchedule, req))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        req = spb.ScheduleRequest(schedule_id=schedule_id)
        return schedule_from_pb(await self._unary(self._sched.ResumeSchedule, req))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._unary(self._sched.DeleteSchedule, spb.ScheduleRequest(schedule_id=schedule_id))
