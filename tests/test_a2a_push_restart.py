"""A2A push-notification configs survive the daemon (issue 20): a task with a webhook is
running when the daemon is killed; the restarted daemon requeues it and still tells the
webhook of its end, and the config can still be read by its owner. Also the store's part on
SQLite, PostgreSQL and in memory."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

pytest.importorskip("a2a.client")
from a2a.types import a2a_pb2 as a2a

from orchgpt.models import Task, TaskState
from orchgpt.store import MemoryStore, Store, open_store
from tests.support.a2a_calls import A2A_ARGS, Caller, Webhook, a2a_url, message, tls
from tests.support.mesh import Daemon, await_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "postgres":
        return open_store(request.getfixturevalue("postgres_url"))
    return open_store(str(tmp_path / "orchgpt.db"))


def test_the_store_keeps_push_configs(store: Store) -> None:
    for tid in ("live", "done"):
        store.create_task(Task(task_id=tid, agent_type="echo"))
    store.put_push_config("live", "push-1", '{"url": "http://a"}')
    store.put_push_config("live", "push-2", '{"url": "http://b"}')
    store.put_push_config("live", "push-1", '{"url": "http://a2"}')  # replaced
    store.put_push_config("done", "push-1", '{"url": "http://c"}')
    done = store.get_task("done")
    assert done is not None
    done.state = TaskState.SUCCEEDED
    store.save_task(done)
    assert store.push_configs("live") == [
        ("push-1", '{"url": "http://a2"}'),
        ("push-2", '{"url": "http://b"}'),
    ]
    assert store.unfinished_push_tasks() == ["live"]
    store.delete_push_config("live", "push-1")
    assert [c for c, _ in store.push_configs("live")] == ["push-2"]
    assert store.push_configs("nope") == []


async def test_a_webhook_is_told_of_the_end_after_the_daemon_is_killed(daemon_factory, certs: Path) -> None:
    import uvicorn

    from orchgpt.a2a.http import _QuietServer

    d: Daemon = daemon_factory(*A2A_ARGS, "--a2a-push", "any").start()
    hook = Webhook()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _QuietServer(uvicorn.Config(hook.app, lifespan="off", log_config=None, interface="asgi3"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    alice = Caller(a2a_url(d), tls(certs, "cli"))
    try:
        client = await alice.client()
        req = message("survives", delay="3")
        cfg = req.configuration.task_push_notification_config
        cfg.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        cfg.token = "tok-restart"
        events = client.send_message(req)
        first = await anext(events)
        task_id = first.task.id
        await events.aclose()
        await await_for(lambda: "TASK_STATE_WORKING" in hook.states(), 30, what="WORKING pushed")
        port = d.port
        d.kill()  # a crash: the task is still running (3 s)
        assert "TASK_STATE_COMPLETED" not in hook.states()
        await alice.close()
        d.start(port=port)
        await await_for(
            lambda: "TASK_STATE_COMPLETED" in hook.states(),
            40,
            what="the restarted daemon to push the end",
        )
        ends = [
            b for s, _, b in hook.got if s == 200 and b["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
        ]
        assert ends[-1]["statusUpdate"]["taskId"] == task_id
        assert {tok for _, tok, _ in hook.got} == {"tok-restart"}
        alice = Caller(a2a_url(d), tls(certs, "cli"))
        got = await (await alice.client()).get_task_push_notification_config(
            a2a.GetTaskPushNotificationConfigRequest(task_id=task_id, id="push-1")
        )
        assert got.url == cfg.url and got.token == "tok-restart"
    finally:
        await alice.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
