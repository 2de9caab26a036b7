"""The mailer against a real local SMTP server (aiosmtpd): STARTTLS, implicit TLS, AUTH, failures."""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from agentd.agents.mailer import MailerAgent, SmtpConfig
from agentd.errors import TaskFailed
from agentd.runtime import Outcome, TaskContext
from orchgpt.models import Action, Artifact, Command, Task, TaskResult, TaskState, Usage
from tests.support.mesh import Daemon

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "robot@example.test", "s3cret-pass"


@dataclass
class Inbox:
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    tls_at_auth: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.original_content))
        )
        return "250 OK"

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
        self.logins.append((auth_data.login.decode(), ok))
        self.tls_at_auth.append(session.ssl is not None)
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    p = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(p))
    return str(p)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture
def starttls_server(ca: trustme.CA) -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    c = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_context(ca),
        require_starttls=True,
        authenticator=inbox.authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    c.start()
    yield c, inbox
    c.stop()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    # aiosmtpd only counts STARTTLS as TLS for AUTH; the whole connection is TLS here.
    c = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        ssl_context=server_context(ca),
        authenticator=inbox.authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    c.start()
    yield c, inbox
    c.stop()


@pytest.fixture
def plain_server() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    c = Controller(inbox, hostname="127.0.0.1", port=free_port())
    c.start()
    yield c, inbox
    c.stop()


def smtp_env(
    monkeypatch: pytest.MonkeyPatch,
    port: int,
    security: str,
    ca_file: str = "",
    user: str = USER,
    password: str = PASSWORD,
) -> None:
    for k, v in {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SECURITY": security,
        "USER": user,
        "PASSWORD": password,
        "FROM": "orchgpt@example.test",
        "TO": "lead@example.test, dev@example.test",
        "CA_FILE": ca_file,
        "TIMEOUT": "5",
    }.items():
        monkeypatch.setenv(f"ORCHGPT_SMTP_{k}", v)


def results() -> list[TaskResult]:
    return [
        TaskResult(
            "t-back",
            TaskState.SUCCEEDED,
            output="tests passed (3 passed)",
            agent_type="backend",
            agent_id="local-backend-1",
            data={"tests_passed": "true", "routes_ok": "true"},
            artifacts=[Artifact("app.py", 10), Artifact("test_app.py", 20)],
            usage=Usage(1200, 300, 0.00036, "gpt-4o-mini", 4),
        ),
        TaskResult(
            "t-front",
            TaskState.FAILED,
            error="fetch('/nope') matches no route",
            agent_type="frontend",
            data={"requeued": "agent local-frontend-1 lost: killed"},
        ),
    ]


def run_mailer(
    inputs: list[TaskResult] | None = None, text: str = "", options: dict[str, str] | None = None
) -> Outcome:
    ctx = TaskContext(
        Task(task_id="m1", agent_type="mailer", input=text, inputs=inputs or [], options=options or {}),
        Path("."),
        "mailer-1",
        lambda e: None,
    )
    return asyncio.run(asyncio.wait_for(MailerAgent().run(ctx), 30))


def test_starttls_with_auth_delivers_the_summary(monkeypatch, starttls_server, ca_file) -> None:  # type: ignore[no-untyped-def]
    c, inbox = starttls_server
    smtp_env(monkeypatch, c.port, "starttls", ca_file)
    out = run_mailer(results(), "Project: todo app")
    assert out.ok and out.data["to"] == "lead@example.test, dev@example.test" and out.data["security"] == "starttls"
    assert inbox.logins == [(USER, True)] and inbox.tls_at_auth == [True]
    [(sender, rcpts, msg)] = inbox.messages
    assert sender == "orchgpt@example.test" and rcpts == ["lead@example.test", "dev@example.test"]
    assert msg["Subject"] == "orchgpt: 1 of 2 tasks succeeded"
    assert msg["Message-ID"] == out.data["message_id"]
    body = msg.get_payload(decode=True).decode()
    assert "Project: todo app" in body
    assert "backend t-back: succeeded on local-backend-1" in body and "checks: tests passed; routes answer" in body
    assert "files: app.py, test_app.py" in body and "1200 prompt + 300 completion tokens, $0.0004" in body
    assert "frontend t-front: failed" in body and "matches no route" in body
    assert "requeued: agent local-frontend-1 lost" in body


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_and_option_recipients(monkeypatch, tls_server, ca_file) -> None:  # type: ignore[no-untyped-def]
    c, inbox = tls_server
    smtp_env(monkeypatch, c.port, "tls", ca_file)
    out = run_mailer(text="Nightly build is green.\nAll good.", options={"to": "ops@example.test", "subject": "build"})
    assert out.ok
    [(_, rcpts, msg)] = inbox.messages
    assert rcpts == ["ops@example.test"] and msg["Subject"] == "build"
    assert "Nightly build is green." in msg.get_payload(decode=True).decode()
    assert inbox.logins == [(USER, True)]


def test_wrong_password_is_a_clear_failure(monkeypatch, starttls_server, ca_file) -> None:  # type: ignore[no-untyped-def]
    c, inbox = starttls_server
    smtp_env(monkeypatch, c.port, "starttls", ca_file, password="wrong")
    with pytest.raises(TaskFailed, match=r"refused the credentials of 'robot@example.test': 535") as e:
        run_mailer(text="x")
    assert "wrong" not in str(e.value)
    assert inbox.messages == []


def test_untrusted_certificate_is_refused(monkeypatch, starttls_server) -> None:  # type: ignore[no-untyped-def]
    c, inbox = starttls_server
    smtp_env(monkeypatch, c.port, "starttls", ca_file="")
    with pytest.raises(TaskFailed, match=r"is not trusted.*ORCHGPT_SMTP_CA_FILE"):
        run_mailer(text="x")
    assert inbox.logins == [] and inbox.messages == []


def test_starttls_required_but_not_offered(monkeypatch, plain_server, ca_file) -> None:  # type: ignore[no-untyped-def]
    c, inbox = plain_server
    smtp_env(monkeypatch, c.port, "starttls", ca_file)
    with pytest.raises(TaskFailed, match="does not offer STARTTLS"):
        run_mailer(text="x")
    assert inbox.messages == []


def test_plain_smtp_without_auth_on_loopback(monkeypatch, plain_server) -> None:  # type: ignore[no-untyped-def]
    c, inbox = plain_server
    smtp_env(monkeypatch, c.port, "none", user="", password="")
    out = run_mailer(text="hello")
    assert out.ok and len(inbox.messages) == 1


def test_configuration_errors_name_the_setting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ORCHGPT_SMTP_HOST", raising=False)
    with pytest.raises(TaskFailed, match="set ORCHGPT_SMTP_HOST"):
        run_mailer(text="x")
    env = {"ORCHGPT_SMTP_HOST": "mail.example.test", "ORCHGPT_SMTP_SECURITY": "ssl"}
    with pytest.raises(TaskFailed, match="must be one of starttls, tls, none"):
        SmtpConfig.from_env(env)
    cfg = SmtpConfig.from_env(
        {"ORCHGPT_SMTP_HOST": "mail.example.test", "ORCHGPT_SMTP_SECURITY": "tls", "ORCHGPT_SMTP_PASSWORD": "pw"}
    )
    assert cfg.port == 465 and "pw" not in repr(cfg)
    # A password never travels in clear text to another host.
    for k, v in {
        "HOST": "mail.example.test",
        "SECURITY": "none",
        "USER": "u",
        "PASSWORD": "p",
        "TO": "a@example.test",
        "PORT": "2525",
    }.items():
        monkeypatch.setenv(f"ORCHGPT_SMTP_{k}", v)
    with pytest.raises(TaskFailed, match="without encryption"):
        run_mailer(text="x")
    monkeypatch.setenv("ORCHGPT_SMTP_TO", "not an address")
    with pytest.raises(TaskFailed, match="not an e-mail address"):
        run_mailer(text="x")


def test_refused_connection_is_a_clear_failure(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    smtp_env(monkeypatch, free_port(), "none", user="", password="")
    with pytest.raises(TaskFailed, match=r"cannot reach the SMTP server 127\.0\.0\.1:\d+"):
        run_mailer(text="x")


@pytest.mark.timeout(90)
async def test_mailer_through_the_mesh(daemon_factory, starttls_server, ca_file) -> None:  # type: ignore[no-untyped-def]
    """orchgpt spawns the mailer with its environment; /mailer run delivers over STARTTLS + AUTH."""
    c, inbox = starttls_server
    env = {
        "ORCHGPT_SMTP_HOST": "127.0.0.1",
        "ORCHGPT_SMTP_PORT": str(c.port),
        "ORCHGPT_SMTP_SECURITY": "starttls",
        "ORCHGPT_SMTP_USER": USER,
        "ORCHGPT_SMTP_PASSWORD": PASSWORD,
        "ORCHGPT_SMTP_TO": "lead@example.test",
        "ORCHGPT_SMTP_CA_FILE": ca_file,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": "test",
    }
    d: Daemon = daemon_factory(env=env).start()
    async with d.client() as client:
        events = []

        async def go() -> None:
            async for ev in client.submit(Command("mailer", Action.RUN, "the mesh says hello")):
                events.append(ev)

        await asyncio.wait_for(go(), 60)
    final = events[-1]
    assert final.state == TaskState.SUCCEEDED, (final.text, d.log()[-2000:])
    assert final.result is not None and final.result.agent_id.startswith("local-mailer-")
    [(_, rcpts, msg)] = inbox.messages
    assert rcpts == ["lead@example.test"] and "the mesh says hello" in msg.get_payload(decode=True).decode()
    assert PASSWORD not in d.log()
