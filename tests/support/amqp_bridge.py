"""The AMQP bridge tests' world: a private RabbitMQ (module scope), the queue names of a test, the
seed's service written with pika, the bridge subprocess, and the fixtures that start them."""

from __future__ import annotations

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

import pika
import pytest

from tests.support.mesh import ROOT, Daemon, issue, wait_for
from tests.support.rabbitmq import Epmd, RabbitMQ

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
        self.ch.basic_publish(
            exchange="",
            routing_key=self.send_queue,
            body=data,
            properties=pika.BasicProperties(delivery_mode=2, **props),
        )

    def receive(
        self, n: int = 1, timeout: float = 20.0, queue: str | None = None, until: Any = None
    ) -> list[tuple[dict[str, Any], Any]]:
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
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchgpt", "bridge", "amqp", *self.args],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: ready in self.log_path.read_bytes() or self.proc.poll() is not None,  # type: ignore[union-attr]
            30,
            what=f"{ready.decode()} in the bridge's log",
        )
        assert self.proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return "\n".join(
            (self.workdir / f"bridge-{i}.log").read_text(errors="replace") for i in range(1, self.runs + 1)
        )

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
        b = Bridge(
            [
                "--url",
                url or broker.url,
                "--agent",
                "echo",
                "--receive-queue",
                queues.to_agent,
                "--send-queue",
                queues.to_service,
                "--address",
                mesh.address,
                "--certs",
                str(mesh.certs),
                "--cert-name",
                "amqp-bridge",
                *extra,
            ],
            tmp_path,
        )
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
