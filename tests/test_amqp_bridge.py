"""The AMQP bridge end to end: a real RabbitMQ, a real daemon with a real echo agent, the real
`python -m orchgpt bridge amqp` subprocess, and a service written the seed's way (pika, the two
queue names swapped on its side, plain strings in, JSON out)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentd.link import Link
from agentd.runtime import Agent, Outcome, TaskContext
from orchgpt.certs import paths_for
from tests.support.mesh import ROOT, Daemon, issue, wait_for
from tests.support.rabbitmq import Epmd, RabbitMQ, missing_reason

pytestmark = pytest.mark.timeout(120)

_missing = missing_reason()
if _missing:
    pytest.skip(_missing, allow_module_level=True)

import pika  # noqa: E402

QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """One private broker (and epmd) for this module: starting one takes several seconds."""
    import trustme

    tls_dir = tmp_path_factory.mktemp("rabbitmq-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tls_dir / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tls_dir / "server-key.pem"))
    epmd = Epmd().start()
    rmq = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"), epmd, tls=(tls_dir / "server.pem", tls_dir / "server-key.pem"))
    try:
        rmq.start(timeout=90)
        yield rmq
    finally:
        rmq.stop()
        epmd.stop()


@dataclass
class Queues:
    to_agent: str  # the service's QUEUE_TO_SEND_MESSAGE, the bridge's receive queue
    to_service: str  # the service's QUEUE_TO_RECEIVE_MESSAGE, the bridge's send queue

    @property
    def dead(self) -> str:
        return f"{self.to_agent}.dead-letter"


@pytest.fixture
def queues() -> Queues:
    n = uuid.uuid4().hex[:8]
    return Queues(f"service-to-autogpt-{n}", f"autogpt-to-service-{n}")


class SeedService:
    """A microservice as the seed's README tells users to write it, with pika: it sends plain
    strings to QUEUE_TO_SEND_MESSAGE and reads JSON {"role", "content"} from
    QUEUE_TO_RECEIVE_MESSAGE. The one change: queues are declared durable (quorum), as the
    bridge declares them."""

    def __init__(self, url: str, send_queue: str, receive_queue: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.send_queue, self.receive_queue = send_queue, receive_queue
        for q in (send_queue, receive_queue):
            self.ch.queue_declare(queue=q, durable=True, arguments=QUORUM)

    def send(self, body: str | bytes, **props: Any) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.ch.basic_publish(exchange="", routing_key=self.send_queue, body=data,
                              properties=pika.BasicProperties(delivery_mode=2, **props))

    def receive(self, n: int = 1, timeout: float = 20.0, queue: str | None = None,
                until: Any = None) -> list[tuple[dict[str, Any], Any]]:
        """Messages (decoded JSON, properties) until ``n`` arrived (or ``until(got)`` is true)."""
        got: list[tuple[dict[str, Any], Any]] = []
        deadline = time.monotonic() + timeout
        q = queue or self.receive_queue
        while (not until(got) if until else len(got) < n) and time.monotonic() < deadline:
            method, props, body = self.ch.basic_get(q, auto_ack=True)
            if method is None:
                self.conn.sleep(0.05)
                continue
            got.append((json.loads(body), props))
        return got

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


@dataclass
class Bridge:
    """The `orchgpt bridge amqp` subprocess."""

    args: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"bridge-{self.runs}.log"

    def start(self, ready: bytes = b"amqp_connected") -> Bridge:
        """Start it and wait for the log line ``ready``."""
        self.runs += 1
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchgpt", "bridge", "amqp", *self.args],
                                         cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: ready in self.log_path.read_bytes() or self.proc.poll() is not None,  # type: ignore[union-attr]
                 30, what=f"{ready.decode()} in the bridge's log")
        assert self.proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return "\n".join((self.workdir / f"bridge-{i}.log").read_text(errors="replace")
                         for i in range(1, self.runs + 1))

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def mesh(daemon_factory: Any, certs: Path) -> Daemon:
    """A daemon that spawns (at most two) local echo agents, and a client certificate for the bridge."""
    issue(certs, "amqp-bridge", "client")
    return daemon_factory("--max-local-agents", "2").start()


@pytest.fixture
def bridge_factory(broker: RabbitMQ, mesh: Daemon, queues: Queues, tmp_path: Path) -> Iterator[Any]:
    made: list[Bridge] = []

    def make(*extra: str, url: str | None = None) -> Bridge:
        b = Bridge(["--url", url or broker.url, "--agent", "echo", "--receive-queue", queues.to_agent,
                    "--send-queue", queues.to_service, "--address", mesh.address, "--certs", str(mesh.certs),
                    "--cert-name", "amqp-bridge", *extra], tmp_path)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop(signal.SIGKILL)


@pytest.fixture
def service(broker: RabbitMQ, queues: Queues) -> Iterator[SeedService]:
    s = SeedService(broker.url, send_queue=queues.to_agent, receive_queue=queues.to_service)
    yield s
    s.close()


def roles(msgs: list[tuple[dict[str, Any], Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m, _ in msgs]


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


def test_queues_an_old_service_declared_non_durable_are_used_as_they_are(bridge_factory: Any, broker: RabbitMQ,
                                                                         queues: Queues) -> None:
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


def test_kill_code_from_service_cancels_the_running_task(bridge_factory: Any, service: SeedService,
                                                         mesh: Daemon) -> None:
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


def test_kill_code_from_the_mesh_side_reaches_the_service(bridge_factory: Any, service: SeedService,
                                                          mesh: Daemon) -> None:
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


def test_correlation_id_and_reply_to_keep_services_apart(bridge_factory: Any, broker: RabbitMQ,
                                                         queues: Queues, service: SeedService) -> None:
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
        ("c-0", "to-shared-0"), ("c-2", "to-shared-2"), ("c-4", "to-shared-4")]
    assert sorted((p.correlation_id, m["content"]) for m, p in private) == [
        ("c-1", "to-mine-1"), ("c-3", "to-mine-3"), ("c-5", "to-mine-5")]
    # Each reply queue is its own conversation.
    assert len({m["session_id"] for m, _ in shared}) == 1
    assert {m["session_id"] for m, _ in shared} != {m["session_id"] for m, _ in private}


def test_poison_messages_go_to_the_dead_letter_queue_with_the_reason(bridge_factory: Any, queues: Queues,
                                                                     service: SeedService) -> None:
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


def test_a_message_redelivered_too_often_is_dead_lettered(bridge_factory: Any, queues: Queues,
                                                          service: SeedService, mesh: Daemon) -> None:
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
        bridge_factory: Any, service: SeedService) -> None:
    n = 100
    bridge = bridge_factory()
    bridge.start()
    for i in range(n):
        service.send(json.dumps({"content": f"m-{i}", "options": {"delay": "0.1"}}),
                     message_id=f"id-{i}", correlation_id=f"c-{i}")
    answers = service.receive(until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= 10,
                              timeout=30)
    bridge.stop(signal.SIGKILL)
    first = sum(m["role"] == "ON_RESPONSE" for m, _ in answers)
    assert first < n, "everything was answered before the crash: the test proves nothing"
    bridge.start()
    answers += service.receive(
        until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= n - first, timeout=40)
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


def test_daemon_down_and_back_every_message_answered_once(bridge_factory: Any, service: SeedService,
                                                          mesh: Daemon) -> None:
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
        (f"d-{i}", "ON_RESPONSE", f"while-down-{i}") for i in range(5)], bridge.log()[-3000:]


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


# ------------------------------------------------------------------ questions (USER_INPUT)

class AskingAgent(Agent):
    """Asks for approval of `calls` tool calls and answers with the decisions it got."""

    type = "asker"
    capabilities = ("asker",)

    async def run(self, ctx: TaskContext) -> Outcome:
        answers = []
        for i in range(int(ctx.task.options.get("calls", "1"))):
            r = await ctx.approve("write_file", json.dumps({"path": f"f{i}.txt"}), f"{ctx.task.input}: write f{i}.txt")
            answers.append(f"{r.decision}" + (f":{r.feedback}" if r.feedback else ""))
        return Outcome(output=" ".join(answers))


@pytest.fixture
def asker(mesh: Daemon, tmp_path: Path) -> Iterator[None]:
    """Two real agent links (mutual TLS, gRPC) running the AskingAgent in a thread of this process."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    links = []
    for i in range(2):
        name = f"asker-{i}-{uuid.uuid4().hex[:6]}"
        issue(mesh.certs, name, "agent")
        links.append(Link(AskingAgent(), name, mesh.address, paths_for(mesh.certs, name), tmp_path / f"ws{i}"))

    async def run_all() -> None:
        await asyncio.gather(*(link.run() for link in links))

    runner = loop.create_task(run_all())

    def serve() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(runner)
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wait_for(lambda: all(link.connected.is_set() for link in links), 15, what="the asking agents to connect")
    yield
    for link in links:
        asyncio.run_coroutine_threadsafe(link.stop(grace=1), loop).result(10)
    loop.call_soon_threadsafe(runner.cancel)
    thread.join(10)


def test_user_input_is_asked_and_answered_over_amqp(bridge_factory: Any, service: SeedService,
                                                    asker: None) -> None:
    bridge_factory().start()
    service.send(json.dumps({"content": "job", "agent": "asker", "approval": True, "options": {"calls": "2"}}))
    [(q1, _)] = service.receive(1)
    assert (q1["role"], q1["content"]) == ("USER_INPUT", "job: write f0.txt")
    service.send("y")  # the seed's way: a plain string answers the conversation's open question
    [(q2, p2)] = service.receive(1)
    assert q2["role"] == "USER_INPUT" and q2["question_id"] != q1["question_id"]
    service.send("only in the workspace", correlation_id=p2.correlation_id)  # or by correlation id
    [(final, _)] = service.receive(1)
    assert (final["role"], final["content"]) == ("ON_RESPONSE", "approve feedback:only in the workspace")


def test_answers_are_matched_by_correlation_id_not_arrival_order(bridge_factory: Any, service: SeedService,
                                                                 asker: None) -> None:
    bridge_factory().start()
    for who in ("alice", "bob"):
        service.send(json.dumps({"content": who, "agent": "asker", "approval": True}), correlation_id=who)
    questions = {m["content"]: p for m, p in service.receive(2)}
    assert set(questions) == {"alice: write f0.txt", "bob: write f0.txt"}
    # answered in the other order, each by its question's correlation id
    service.send("for bob", correlation_id=questions["bob: write f0.txt"].correlation_id)
    service.send("for alice", correlation_id=questions["alice: write f0.txt"].correlation_id)
    finals = {p.correlation_id: m["content"] for m, p in service.receive(2)}
    assert finals == {"alice": "feedback:for alice", "bob": "feedback:for bob"}


def test_a_no_answer_ends_the_conversation(bridge_factory: Any, service: SeedService, asker: None,
                                           mesh: Daemon) -> None:
    import asyncio

    bridge_factory().start()
    service.send(json.dumps({"content": "job", "agent": "asker", "approval": True}))
    [(q, _)] = service.receive(1)
    assert q["role"] == "USER_INPUT"
    service.send("no")
    assert roles(service.receive(1)) == [("SYSTEM", "SIGTERM_FROM_AUTOGPT")]

    async def state() -> str:
        async with mesh.client("amqp-bridge") as c:  # the bridge owns the tasks it submits
            task, _, _ = await c.get_task(q["task_id"], with_events=False)
            return str(task.state)

    assert asyncio.run(state()) == "cancelled"
    assert service.receive(1, timeout=2) == []  # one kill code, no other answer


def test_bridge_killed_with_a_question_open_asks_only_that_one_again(bridge_factory: Any, service: SeedService,
                                                                     asker: None) -> None:
    bridge = bridge_factory().start()
    service.send(json.dumps({"content": "job", "agent": "asker", "approval": True, "options": {"calls": "2"}}),
                 message_id="job-1")
    [(q1, _)] = service.receive(1)
    service.send("y")
    [(q2, _)] = service.receive(1)
    assert q2["role"] == "USER_INPUT" and q2["question_id"] != q1["question_id"]
    bridge.stop(signal.SIGKILL)
    bridge.start()  # the request is redelivered: its task's events are replayed, both questions with them
    again = service.receive(1, timeout=20) + service.receive(1, timeout=2)
    assert [(m["role"], m["question_id"]) for m, _ in again] == [("USER_INPUT", q2["question_id"])]
    service.send("y")  # the one open question, so a plain answer still finds it
    [(final, _)] = service.receive(1)
    assert (final["role"], final["content"]) == ("ON_RESPONSE", "approve approve"), bridge.log()


# ------------------------------------------------------------------ broker restart (last: it restarts the broker)

def test_broker_restart_with_messages_in_flight_every_message_answered_exactly_once(
        bridge_factory: Any, broker: RabbitMQ, queues: Queues) -> None:
    n = 100
    bridge = bridge_factory().start()
    service = SeedService(broker.url, send_queue=queues.to_agent, receive_queue=queues.to_service)
    for i in range(n):
        service.send(json.dumps({"content": f"m-{i}", "options": {"delay": "0.1"}}),
                     message_id=f"id-{i}", correlation_id=f"c-{i}")
    answers = service.receive(until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= 5,
                              timeout=30)
    service.close()
    broker.kill()  # a crash, not a clean stop
    broker.start(timeout=60)
    first = sum(m["role"] == "ON_RESPONSE" for m, _ in answers)
    assert first < n, "everything was answered before the crash: the test proves nothing"
    service = SeedService(broker.url, send_queue=queues.to_agent, receive_queue=queues.to_service)
    try:
        answers += service.receive(
            until=lambda got: sum(m["role"] == "ON_RESPONSE" for m, _ in got) >= n - first, timeout=45)
        answers += service.receive(1, timeout=2)
    finally:
        service.close()
    final = [(p.correlation_id, m["content"]) for m, p in answers if m["role"] == "ON_RESPONSE"]
    assert sorted(final) == sorted((f"c-{i}", f"m-{i}") for i in range(n)), bridge.log()[-3000:]
    assert "amqp_connection_lost" in bridge.log() and bridge.proc is not None and bridge.proc.poll() is None
