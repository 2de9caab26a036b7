"""A2A push notifications: a webhook told of each change of state, and the URLs screened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    TaskNotFoundError,
)

from tests.support.a2a_calls import A2A_ARGS, Caller, Webhook, a2a_url, final_state, message, stream, tls
from tests.support.mesh import await_for, issue

pytestmark = pytest.mark.timeout(90)


async def test_push_notifications_on_each_change_of_state(daemon_factory, certs: Path) -> None:
    import socket

    import uvicorn

    from orchgpt.a2a.http import _QuietServer

    issue(certs, "bob", "client")
    d = daemon_factory(*A2A_ARGS, "--a2a-push", "any").start()
    hook = Webhook()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _QuietServer(uvicorn.Config(hook.app, lifespan="off", log_config=None, interface="asgi3"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    bob = Caller(alice.base, tls(certs, "bob"))
    try:
        client = await alice.client()
        body = (await alice.http.get(f"{alice.base}/echo/.well-known/agent-card.json")).json()
        assert body["capabilities"]["pushNotifications"] is True
        req = message("pushed", delay="1")
        cfg = req.configuration.task_push_notification_config
        cfg.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        cfg.token = "tok-1"
        events = await stream(client, req)
        task_id = events[0].task.id
        assert final_state(events) == a2a.TASK_STATE_COMPLETED
        await await_for(lambda: "TASK_STATE_COMPLETED" in hook.states(), 30, what="the last push")
        assert hook.got[0][0] == 500  # the first try failed: it was retried
        assert hook.got[1][2] == hook.got[0][2]
        assert {tok for _, tok, _ in hook.got} == {"tok-1"}
        states = hook.states()
        assert states[-1] == "TASK_STATE_COMPLETED" and "TASK_STATE_WORKING" in states
        assert len(states) == len(set(states))  # changes of state only
        assert all(b["statusUpdate"]["taskId"] == task_id for _, _, b in hook.got)

        got = await client.get_task_push_notification_config(
            a2a.GetTaskPushNotificationConfigRequest(task_id=task_id, id="push-1")
        )
        assert got.url == cfg.url and got.token == "tok-1"
        with pytest.raises(TaskNotFoundError):  # bob cannot read alice's webhook or its token
            await (await bob.client()).get_task_push_notification_config(
                a2a.GetTaskPushNotificationConfigRequest(task_id=task_id, id="push-1")
            )
    finally:
        await alice.close()
        await bob.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_push_urls_are_screened() -> None:
    from orchgpt.a2a.push import PushNotifier, PushRefused

    public, anything = (
        PushNotifier(None, "public", dict().get),
        PushNotifier(None, "any", dict().get),
    )
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://10.0.0.1/"):
        with pytest.raises(PushRefused, match="loopback, private"):
            await public.check(a2a.TaskPushNotificationConfig(url=url))
        await anything.check(a2a.TaskPushNotificationConfig(url=url))
    for url in ("ftp://example.com/", "file:///etc/passwd", "not a url"):
        with pytest.raises(PushRefused, match="not an http"):
            await anything.check(a2a.TaskPushNotificationConfig(url=url))
