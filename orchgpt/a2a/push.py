"""A2A push notifications: a webhook per task, told each time the task changes state.

Configs are kept in the store (store/push_configs.py; the daemon's memory only without one), so
that a task still running when the daemon restarts keeps telling its webhooks. Each task with a
config has one watcher (a mesh Subscriber) that turns its events into A2A status updates and
POSTs each change of state, in order, to every config of the task, as a2a-sdk's sender does
(the body a StreamResponse, the token in X-A2A-Notification-Token, the config's authentication
as Authorization), retried with backoff. Which URLs may be called is ``--a2a-push``: ``public``
screens them with a2a-sdk's validate_push_notification_url (no loopback, private, link-local
or metadata addresses), ``any`` allows every http(s) URL (a trusted network, tests).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
from a2a.types import a2a_pb2 as a2a
from a2a.utils.proto_utils import to_stream_response
from a2a.utils.push_url_validator import validate_push_notification_url
from google.protobuf.json_format import MessageToDict, MessageToJson, Parse

from .. import durable, logs
from ..errors import ErrorCode, OrchgptError
from ..mesh import Mesh
from ..models import EventKind, Task, TaskEvent
from . import mapping

log = logs.get("orchgpt.a2a.push")

MAX_PER_TASK = 8
MAX_TASKS = 10_000
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # after the first try: six tries in all
TIMEOUT = 10.0


class PushRefused(OrchgptError, ValueError):
    """A config the daemon will not take; the text names the field."""

    code = ErrorCode.INVALID_ARGUMENT


class _Watch:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()

    def deliver(self, event: TaskEvent) -> bool:
        if self.queue.qsize() >= 10_000:
            return False
        self.queue.put_nowait(event)
        return True

    def close(self, reason: str) -> None:
        self.queue.put_nowait(None)


class PushNotifier:
    def __init__(self, mesh: Mesh, policy: str, task_of: Callable[[str], Task | None]) -> None:
        self.mesh = mesh
        self.policy = policy  # "public" or "any"
        self.task_of = task_of
        self.configs: dict[str, dict[str, a2a.TaskPushNotificationConfig]] = {}  # without a store
        self.store = getattr(mesh, "store", None)
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------ configs
    async def check(self, cfg: a2a.TaskPushNotificationConfig) -> None:
        """PushRefused unless the daemon may call this URL (the --a2a-push policy)."""
        url = cfg.url
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise PushRefused(f"url: not an http(s) URL: {url[:200]!r}")
        if self.policy == "public" and not await validate_push_notification_url(url):
            raise PushRefused(
                "url: a loopback, private, link-local or unresolvable address is "
                "refused (the daemon's --a2a-push is 'public')"
            )

    async def add(self, task: Task, cfg: a2a.TaskPushNotificationConfig) -> a2a.TaskPushNotificationConfig:
        await self.check(cfg)
        parsed = urllib.parse.urlparse(cfg.url)
        if task.state.terminal:
            raise PushRefused(f"task_id: task {task.task_id!r} is {task.state}: nothing will change")
        per = self._configs(task.task_id)
        stored = a2a.TaskPushNotificationConfig()
        stored.CopyFrom(cfg)
        stored.task_id = task.task_id
        stored.id = cfg.id or f"push-{len(per) + 1}"
        if stored.id not in per and len(per) >= MAX_PER_TASK:
            raise PushRefused(f"at most {MAX_PER_TASK} push configs per task")
        if self.store is not None:  # StoreError: refused, as any write the store refuses
            self.store.put_push_config(task.task_id, stored.id, MessageToJson(stored))
        else:
            if task.task_id not in self.configs and len(self.configs) >= MAX_TASKS:
                self.configs.pop(next(iter(self.configs)))
            self.configs.setdefault(task.task_id, {})[stored.id] = stored
        self._watch(task)
        log.info("a2a_push_config", task_id=task.task_id, config_id=stored.id, host=parsed.hostname)
        return stored

    def _configs(self, task_id: str) -> dict[str, a2a.TaskPushNotificationConfig]:
        if self.store is None:
            return dict(self.configs.get(task_id, {}))
        return {
            cid: Parse(text, a2a.TaskPushNotificationConfig(), ignore_unknown_fields=True)
            for cid, text in self.store.push_configs(task_id)
        }

    def get(self, task_id: str, config_id: str) -> a2a.TaskPushNotificationConfig | None:
        return self._configs(task_id).get(config_id)

    def list(self, task_id: str) -> list[a2a.TaskPushNotificationConfig]:
        return list(self._configs(task_id).values())

    def delete(self, task_id: str, config_id: str) -> None:
        if self.store is not None:
            self.store.delete_push_config(task_id, config_id)
        self.configs.get(task_id, {}).pop(config_id, None)

    def resume(self) -> int:
        """After a (re)start: watch again every unfinished task that has configs in the store
        (call once the mesh has recovered its tasks). Returns how many."""
        if self.store is None:
            return 0
        n = 0
        for task_id in self.store.unfinished_push_tasks():
            t = self.task_of(task_id)
            if t is not None and not t.state.terminal:
                self._watch(t)
                n += 1
        if n:
            log.info("a2a_push_resumed", tasks=n)
        return n

    # ------------------------------------------------------------ delivery
    def _watch(self, task: Task) -> None:
        if task.task_id in self._watchers or task.task_id not in self.mesh.active:
            return
        sub = _Watch()
        self.mesh.subscribe(sub, task.task_id)  # from now on: later changes only
        w = asyncio.create_task(self._run(task.task_id, sub))
        self._watchers[task.task_id] = w
        w.add_done_callback(lambda _t: self._watchers.pop(task.task_id, None))

    async def _run(self, task_id: str, sub: _Watch) -> None:
        last: a2a.TaskState | None = None
        try:
            t = self.task_of(task_id)
            if t is not None and not t.state.terminal:  # where it stands now, then each change
                last = mapping.a2a_state(t.state)
                st = a2a.TaskStatus(state=last)
                st.timestamp.GetCurrentTime()
                await self._send(
                    task_id,
                    a2a.TaskStatusUpdateEvent(task_id=task_id, context_id=t.session_id, status=st),
                )
            while True:
                ev = await sub.queue.get()
                if ev is None:
                    return
                if ev.task_id != task_id:
                    continue
                t = self.task_of(task_id)
                if t is None:
                    return
                for out in mapping.stream_events(ev, t, appended=True):
                    if isinstance(out, a2a.TaskStatusUpdateEvent) and out.status.state != last:
                        last = out.status.state
                        await self._send(task_id, out)
                if ev.kind == EventKind.RESULT:
                    return
        finally:
            self.mesh.unsubscribe(sub, task_id)

    async def _send(self, task_id: str, event: a2a.TaskStatusUpdateEvent) -> None:
        if durable._open:  # a change is told only once it is committed (group commit)
            try:
                await durable.settle()
            except Exception as exc:
                log.warning("a2a_push_not_committed", task_id=task_id, error=str(exc))
                return
        body = MessageToDict(to_stream_response(event))
        for cfg in self.list(task_id):
            await self._post(cfg, body)

    async def _post(self, cfg: a2a.TaskPushNotificationConfig, body: dict[str, Any]) -> bool:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        headers = {}
        if cfg.token:
            headers["X-A2A-Notification-Token"] = cfg.token
        if cfg.HasField("authentication") and cfg.authentication.scheme and cfg.authentication.credentials:
            headers["Authorization"] = f"{cfg.authentication.scheme} {cfg.authentication.credentials}"
        host = urllib.parse.urlparse(cfg.url).hostname
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            try:
                r = await self._http.post(cfg.url, json=body, headers=headers)
                if 200 <= r.status_code < 300:
                    return True
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            log.warning(
                "a2a_push_failed",
                task_id=cfg.task_id,
                config_id=cfg.id,
                host=host,
                attempt=attempt + 1,
                error=why,
            )
        log.error("a2a_push_given_up", task_id=cfg.task_id, config_id=cfg.id, host=host)
        return False

    async def close(self) -> None:
        for w in list(self._watchers.values()):
            w.cancel()
        if self._http is not None:
            await self._http.aclose()
