"""A real RabbitMQ broker for tests, from Debian's `rabbitmq-server` package.

Everything is private to a temp dir: its own Erlang port mapper (epmd on a free
port), node name, AMQP and distribution ports, mnesia and log dirs, an empty
plugins file (no management plugin), a config file that listens on 127.0.0.1
only, and an Erlang cookie in a HOME pointing at the temp dir. Nothing of the
machine's own RabbitMQ (if any) is read or touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RABBIT_BIN / "rabbitmq-server"
CTL = RABBIT_BIN / "rabbitmqctl"


def missing_reason() -> str | None:
    """Why a broker cannot be started here, or None."""
    if not SERVER.exists() or not CTL.exists():
        return "RabbitMQ is not installed (Debian package rabbitmq-server; .ci/run installs it)"
    if shutil.which("epmd") is None:
        return "epmd (Erlang) is not installed (it comes with the rabbitmq-server package)"
    try:
        import pika  # noqa: F401
    except ImportError:
        return "pika is not installed (pip install 'orchgpt[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


@dataclass
class Epmd:
    """The Erlang port mapper on a free port (ERL_EPMD_PORT), one per test session."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Epmd:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["epmd", "-port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"epmd exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"epmd did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)


@dataclass
class RabbitMQ:
    """A broker in ``workdir``: start(), stop(), restart(); ``url`` for clients."""

    workdir: Path
    epmd: Epmd
    port: int = 0
    dist_port: int = 0
    node: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0
    # (certfile, keyfile) to also listen with TLS (amqps) on ``tls_port``
    tls: tuple[Path, Path] | None = None
    tls_port: int = 0
    _cookie: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def amqps_url(self) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/"

    def env(self) -> dict[str, str]:
        d = self.workdir
        return {
            **os.environ,
            "HOME": str(d),
            "ERL_EPMD_PORT": str(self.epmd.port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_GENERATED_CONFIG_DIR": str(d / "config"),
            "RABBITMQ_SCHEMA_DIR": str(d / "schema"),
            # The distribution listener on loopback only, like AMQP.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _prepare(self) -> None:
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        cookie = d / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self._cookie)
            cookie.chmod(0o400)
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")
        conf = (
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = true\nlog.console.level = warning\nlog.file.level = info\n"
        )
        if self.tls is not None:
            conf += (
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.certfile = {self.tls[0]}\nssl_options.keyfile = {self.tls[1]}\n"
                "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
            )
        (d / "rabbitmq.conf").write_text(conf)

    def start(self, timeout: float = 60.0) -> RabbitMQ:
        """Start the node (keeping ports, node name and data across restarts) and wait until an
        AMQP client can connect."""
        if not self.port:
            self.port = free_port()
            self.dist_port = free_port()
            self.tls_port = free_port() if self.tls is not None else 0
            self.node = f"orchgpt-test-{uuid.uuid4().hex[:8]}@localhost"
        self._prepare()
        self.starts += 1
        self.log_path = self.workdir / f"rabbitmq-{self.starts}.out"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(SERVER)],
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import pika

        params = pika.ConnectionParameters(
            "127.0.0.1", self.port, connection_attempts=1, socket_timeout=2, blocked_connection_timeout=2
        )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                pika.BlockingConnection(params).close()
                return
            except Exception as exc:  # not up yet
                last = repr(exc)
                time.sleep(0.2)
        raise TimeoutError(
            f"RabbitMQ did not accept connections on {self.port} within {timeout}s ({last}):\n{self.log()}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        """`rabbitmqctl stop`, then kill what is left of the process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            subprocess.run(
                [str(CTL), "-n", self.node, "stop"],
                env=self.env(),
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
            )
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(self.proc)

    def kill(self) -> None:
        """SIGKILL the broker (a crash: nothing flushed on purpose)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, timeout: float = 60.0) -> RabbitMQ:
        self.stop()
        return self.start(timeout)
