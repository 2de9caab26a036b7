"""The A2A push-notification methods of MeshRequestHandler (a mixin): configs per task,
the caller's own tasks only (CancelTask's rule), refused when the daemon has push off."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from a2a.server.context import ServerCallContext
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotFoundError,
)

from ..models import Task

if TYPE_CHECKING:
    from ..certs import Identity
    from .push import PushNotifier


class PushConfigs:
    push: PushNotifier | None

    if TYPE_CHECKING:

        def _caller(self, context: ServerCallContext, rpc: str) -> Identity: ...
        def _tenant(self, context: ServerCallContext, known: bool = True) -> str: ...
        def _task(self, ident: Identity, rpc: str, task_id: str, tenant: str) -> Task: ...
        def _start(self, params: a2a.SendMessageRequest, context: ServerCallContext) -> tuple[Task, bool]: ...

    def _push_task(self, context: ServerCallContext, task_id: str) -> Task:
        """The task a push config is about: the caller's own (CancelTask's rule)."""
        if self.push is None:
            raise PushNotificationNotSupportedError(
                message="push notifications are off on this daemon (orchgpt serve --a2a-push)"
            )
        ident = self._caller(context, "CancelTask")
        return self._task(ident, "CancelTask", task_id, self._tenant(context, known=False))

    async def _add_push(self, task: Task | None, cfg: a2a.TaskPushNotificationConfig) -> Any:
        """Register ``cfg`` for ``task`` (None: only check that it would be taken)."""
        from .push import PushRefused

        if self.push is None:
            raise PushNotificationNotSupportedError(
                message="push notifications are off on this daemon (orchgpt serve --a2a-push)"
            )
        try:
            if task is None:
                return await self.push.check(cfg)
            return await self.push.add(task, cfg)
        except PushRefused as exc:
            raise InvalidParamsError(message=str(exc)) from None

    async def _start_with_push(self, params: a2a.SendMessageRequest, context: ServerCallContext) -> tuple[Task, bool]:
        """_start, with the message's push config checked before and registered after."""
        conf = params.configuration
        cfg = conf.task_push_notification_config if conf.HasField("task_push_notification_config") else None
        if cfg is not None:
            await self._add_push(None, cfg)  # refused before anything is submitted
        task, new = self._start(params, context)
        if cfg is not None:
            await self._add_push(task, cfg)
        return task, new

    async def on_create_task_push_notification_config(self, params: Any, context: ServerCallContext) -> Any:
        t = self._push_task(context, params.task_id)
        return await self._add_push(t, params)

    async def on_get_task_push_notification_config(self, params: Any, context: ServerCallContext) -> Any:
        t = self._push_task(context, params.task_id)
        assert self.push is not None
        cfg = self.push.get(t.task_id, params.id)
        if cfg is None:
            raise TaskNotFoundError(message=f"no push config {params.id!r} of task {t.task_id!r}")
        return cfg

    async def on_list_task_push_notification_configs(self, params: Any, context: ServerCallContext) -> Any:
        t = self._push_task(context, params.task_id)
        assert self.push is not None
        return a2a.ListTaskPushNotificationConfigsResponse(configs=self.push.list(t.task_id))

    async def on_delete_task_push_notification_config(self, params: Any, context: ServerCallContext) -> None:
        t = self._push_task(context, params.task_id)
        assert self.push is not None
        self.push.delete(t.task_id, params.id)
