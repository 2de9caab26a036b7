"""The AMQP bridge end to end: a real RabbitMQ, a real daemon with a real echo agent, the real
`python -m orchgpt bridge amqp` subprocess, and a service written the seed's way (pika, the two
queue names swapped on its side, plain strings in, JSON out)."""

from __future__ import annotations

import json
import signal
import time
import uuid
from typing import Any

import pytest

from tests.support.mesh import Daemon, wait_for
from tests.support.rabbitmq import RabbitMQ, missing_reason

pytestmark = pytest.mark.timeout(120)

_missing = missing_reason()
if _missing:
    pytest.skip(_missing, allow_module_level=True)

import pika  # noqa: E402

from tests.support import amqp_bridge  # noqa: E402
from tests.support.amqp_bridge import QUORUM, Queues, SeedService, roles  # noqa: E402

# The shared fixtures (pytest finds a fixture by its name in the test's module).
broker, queues, mesh = amqp_bridge.broker, amqp_bridge.queues, amqp_bridge.mesh
bridge_factory, service = amqp_bridge.bridge_factory, amqp_bridge.service


def test_seed_service_talks_to_echo_and_kill_code_is_answered(bridge_factory: Any, service: SeedService) -> None:
    bridge = bridge_factory().start()
    service.send("hello")
    [(msg, props)] = service.receive(1)
    assert (msg["role"], msg["content"]) == ("ON_RESPONSE", "hello"), bridge.log()
    assert props.delivery_mode == 2
    assert msg["task_id"].startswith("amqp-") and msg["state"] == "succeeded"
    service.send("SIGTERM_FROM_SERVICE")
    got = service.receive(1)
    assert roles(got) == [("SYSTEM", "SIGTERM_FROM_AUTOGPT")], bridge.log()
    assert "guest:guest" not in bridge.log() and "amqp://guest:***@" in bridge.log()


def test_queues_an_old_service_declared_non_durable_are_used_as_they_are(
    bridge_factory: Any, broker: RabbitMQ, queues: Queues
) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        for q in (queues.to_agent, queues.to_service):
            ch.queue_declare(queue=q)  # exactly the seed's declaration: not durable
        bridge = bridge_factory().start()
        assert bridge.log().count("amqp_queue_mismatch") == 2
        ch.basic_publish("", queues.to_agent, b"legacy")
        deadline = time.monotonic() + 20
        body = None
        while body is None and time.monotonic() < deadline:
            _, _, body = ch.basic_get(queues.to_service, auto_ack=True)
            conn.sleep(0.05)
        assert body is not None and json.loads(body)["content"] == "legacy", bridge.log()
    finally:
        conn.close()


def test_kill_code_from_service_cancels_the_running_task(
    bridge_factory: Any, service: SeedService, mesh: Daemon
) -> None:
    import asyncio

    bridge_factory().start()
    service.send(json.dumps({"content": "slow", "options": {"delay": "60"}, "session_id": "conv-1"}))
    [(report, _)] = service.receive(1, timeout=30)
    assert report["role"] == "REPORT" and "waiting 60s" in report["content"]
    task_id = report["task_id"]
    service.send(json.dumps({"content": "SIGTERM_FROM_SERVICE", "session_id": "conv-1"}))
    got = service.receive(1)
    assert roles(got) == [("SYSTEM", "SIGTERM_FROM_AUTOGPT")]

    async def state() -> str:
        async with mesh.client("amqp-bridge") as c:  # the bridge owns the tasks it submits
            task, _, _ = await c.get_task(task_id, with_events=False)
            return str(task.state)

    assert asyncio.run(state()) == "cancelled"
    # The cancelled request is not answered a second time (no stale kill code for the next run).
    assert service.receive(1, timeout=2) == []


def test_kill_code_from_the_mesh_side_reaches_the_service(
    bridge_factory: Any, service: SeedService, mesh: Daemon
) -> None:
    import asyncio

    bridge_factory().start()
    service.send(json.dumps({"content": "slow", "options": {"delay": "60"}}))
    [(report, _)] = service.receive(1, timeout=30)

    async def cancel() -> None:
        async with mesh.client("amqp-bridge") as c:  # the bridge owns the tasks it submits
            await c.cancel(report["task_id"], "stopped by the operator")

    asyncio.run(cancel())
    [(msg, _)] = service.receive(1)
    assert (msg["role"], msg["content"]) == ("SYSTEM", "SIGTERM_FROM_AUTOGPT")
    assert msg["reason"] == "stopped by the operator" and msg["task_id"] == report["task_id"]


def test_correlation_id_and_reply_to_keep_services_apart(
    bridge_factory: Any, broker: RabbitMQ, queues: Queues, service: SeedService
) -> None:
    bridge_factory().start()
    mine = f"replies-{uuid.uuid4().hex[:6]}"
    service.ch.queue_declare(queue=mine, durable=True, arguments=QUORUM)
    for i in range(6):
        if i % 2:
            service.send(f"to-mine-{i}", correlation_id=f"c-{i}", reply_to=mine)
        else:
            service.send(f"to-shared-{i}", correlation_id=f"c-{i}")
    shared = service.receive(3)
    private = service.receive(3, queue=mine)
    assert sorted((p.correlation_id, m["content"]) for m, p in shared) == [
        ("c-0", "to-shared-0"),
        ("c-2", "to-shared-2"),
        ("c-4", "to-shared-4"),
    ]
    assert sorted((p.correlation_id, m["content"]) for m, p in private) == [
        ("c-1", "to-mine-1"),
        ("c-3", "to-mine-3"),
        ("c-5", "to-mine-5"),
    ]
    # Each reply queue is its own conversation.
    assert len({m["session_id"] for m, _ in shared}) == 1
    assert {m["session_id"] for m, _ in shared} != {m["session_id"] for m, _ in private}


def test_poison_messages_go_to_the_dead_letter_queue_with_the_reason(
    bridge_factory: Any, queues: Queues, service: SeedService
) -> None:
    bridge = bridge_factory().start()
    service.ch.queue_declare(queue=queues.dead, durable=True, arguments=QUORUM)
    service.send(b"{not json", content_type="application/json", correlation_id="p-1")
    service.send(b"\xff\xfe", correlation_id="p-2")
    service.send(json.dumps({"content": "x", "agent": "no-such-agent"}), correlation_id="p-3")
    service.send("still fine", correlation_id="p-4")
    replies = service.receive(4)
    by_corr = {p.correlation_id: m for m, p in replies}
    assert by_corr["p-4"]["content"] == "still fine"
    assert "not valid JSON" in by_corr["p-1"]["content"] and by_corr["p-1"]["role"] == "SYSTEM"
    assert "not UTF-8" in by_corr["p-2"]["content"]
    assert "unknown agent type 'no-such-agent'" in by_corr["p-3"]["content"], bridge.log()
    dead: dict[str, tuple[bytes, Any]] = {}
    deadline = time.monotonic() + 10
    while len(dead) < 3 and time.monotonic() < deadline:
        method, props, body = service.ch.basic_get(queues.dead, auto_ack=True)
        if method is None:
            service.conn.sleep(0.05)
            continue
        dead[props.correlation_id] = (body, props)
    assert sorted(dead) == ["p-1", "p-2", "p-3"]
    assert dead["p-2"][0] == b"\xff\xfe"  # the original body, untouched
    assert "not UTF-8" in dead["p-2"][1].headers["x-orchgpt-reason"]
    assert bridge.proc is not None and bridge.proc.poll() is None


def test_a_message_redelivered_too_often_is_dead_lettered(
    bridge_factory: Any, queues: Queues, service: SeedService, mesh: Daemon
) -> None:
    import asyncio

    first = bridge_factory().start()
    service.send(json.dumps({"content": "crashes its bridge", "options": {"delay": "30"}}), correlation_id="x-1")
    [(report, _)] = service.receive(1, timeout=30)
    assert report["role"] == "REPORT"
    first.stop(signal.SIGKILL)
    bridge_factory("--max-redeliveries", "0").start()
    [(reply, props)] = service.receive(1, timeout=30)
    assert (props.correlation_id, reply["role"]) == ("x-1", "SYSTEM")
    assert "redelivered 1 times without an answer (limit 0)" in reply["content"]
    service.ch.queue_declare(queue=queues.dead, durable=True, arguments=QUORUM)
    method, dead_props, body = service.ch.basic_get(queues.dead, auto_ack=True)
    assert method is not None and json.loads(body)["content"] == "crashes its bridge"
    assert "redelivered 1 times" in dead_props.headers["x-orchgpt-reason"]

    async def state() -> str:
        async with mesh.client("amqp-bridge") as c:  # the bridge owns the tasks it submits
            task, _, _ = await c.get_task(report["task_id"], with_events=False)
            return str(task.state)

    assert asyncio.run(state()) == "cancelled"  # nobody waits for it any more


def test_kill_9_bridge_with_messages_in_flight_every_message_answered_exactly_once(
    bridge_factory: Any, service: SeedService
) -> None:
    n = 100
    bridge = bridge_factory()
    bridge.start()
    for i in range(n):
        service.send(
            json.dumps({"content": f"m-{i}", "options": {"delay": "0.1"}}),
            message_id=f"id-{i}",
            correlation_id=f"c-{i}",
        )
    answers = service.receive(until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= 10, timeout=30)
    bridge.stop(signal.SIGKILL)
    first = sum(m["role"] == "ON_RESPONSE" for m, _ in answers)
    assert first < n, "everything was answered before the crash: the test proves nothing"
    bridge.start()
    answers += service.receive(
        until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= n - first, timeout=40
    )
    answers += service.receive(1, timeout=2)  # anything doubled arrives now
    final = [(p.correlation_id, m["content"]) for m, p in answers if m["role"] == "ON_RESPONSE"]
    assert sorted(final) == sorted((f"c-{i}", f"m-{i}") for i in range(n)), bridge.log()
    assert len(final) == n


def test_sigterm_stops_the_bridge_and_the_next_one_answers(bridge_factory: Any, service: SeedService) -> None:
    bridge = bridge_factory().start()
    service.send(json.dumps({"content": "slow", "options": {"delay": "3"}}), message_id="slow-1")
    [(report, _)] = service.receive(1, timeout=30)
    assert report["role"] == "REPORT"
    assert bridge.stop(signal.SIGTERM) == 0
    assert "bridge_stopped" in bridge.log()
    bridge.start()  # the request was not acked: the next bridge answers it (from the same task)
    answers = service.receive(until=lambda got: any(m["role"] == "ON_RESPONSE" for m, _ in got), timeout=30)
    answers += service.receive(1, timeout=2)
    assert [m["content"] for m, _ in answers if m["role"] == "ON_RESPONSE"] == ["slow"]
    assert {m["task_id"] for m, _ in answers} == {report["task_id"]}


def test_daemon_down_and_back_every_message_answered_once(
    bridge_factory: Any, service: SeedService, mesh: Daemon
) -> None:
    bridge = bridge_factory().start()
    service.send("before")
    assert roles(service.receive(1)) == [("ON_RESPONSE", "before")]
    port = mesh.port
    mesh.kill()  # kill -9 the daemon
    for i in range(5):
        service.send(f"while-down-{i}", message_id=f"down-{i}", correlation_id=f"d-{i}")
    wait_for(lambda: b"mesh_unavailable" in bridge.log_path.read_bytes(), 20, what="the bridge to retry the mesh")
    mesh.start(port=port)
    answers = service.receive(5, timeout=40) + service.receive(1, timeout=2)
    assert sorted((p.correlation_id, m["role"], m["content"]) for m, p in answers) == [
        (f"d-{i}", "ON_RESPONSE", f"while-down-{i}") for i in range(5)
    ], bridge.log()[-3000:]


def test_amqps_with_a_ca_file(bridge_factory: Any, broker: RabbitMQ, service: SeedService) -> None:
    ca = broker.tls[0].parent / "ca.pem"  # type: ignore[index]
    # The system's CAs do not know this broker: refused, said so, and retried (the bridge stays up).
    untrusted = bridge_factory(url=broker.amqps_url).start(ready=b"amqp_unavailable")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.log()
    untrusted.stop()
    bridge = bridge_factory("--ca-file", str(ca), url=broker.amqps_url).start()
    service.send("over tls")
    assert roles(service.receive(1)) == [("ON_RESPONSE", "over tls")], bridge.log()
    assert "amqps://guest:***@127.0.0.1" in bridge.log() and "guest:guest" not in bridge.log()


# ------------------------------------------------------------------ broker restart (last: it restarts the broker)


def test_broker_restart_with_messages_in_flight_every_message_answered_exactly_once(
    bridge_factory: Any, broker: RabbitMQ, queues: Queues
) -> None:
    n = 100
    bridge = bridge_factory().start()
    service = SeedService(broker.url, send_queue=queues.to_agent, receive_queue=queues.to_service)
    for i in range(n):
        service.send(
            json.dumps({"content": f"m-{i}", "options": {"delay": "0.1"}}),
            message_id=f"id-{i}",
            correlation_id=f"c-{i}",
        )
    answers = service.receive(until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= 5, timeout=30)
    service.close()
    broker.kill()  # a crash, not a clean stop
    broker.start(timeout=60)
    first = sum(m["role"] == "ON_RESPONSE" for m, _ in answers)
    assert first < n, "everything was answered before the crash: the test proves nothing"
    service = SeedService(broker.url, send_queue=queues.to_agent, receive_queue=queues.to_service)
    try:
        answers += service.receive(
            until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= n - first, timeout=45
        )
        answers += service.receive(1, timeout=2)
    finally:
        service.close()
    final = [(p.correlation_id, m["content"]) for m, p in answers if m["role"] == "ON_RESPONSE"]
    assert sorted(final) == sorted((f"c-{i}", f"m-{i}") for i in range(n)), bridge.log()[-3000:]
    assert "amqp_connection_lost" in bridge.log() and bridge.proc is not None and bridge.proc.poll() is None
