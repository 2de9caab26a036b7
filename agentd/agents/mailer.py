"""mailer: a summary e-mail of a task's result, over SMTP.

The summary covers the task's inputs (the results a manager hands it: agent,
state, output, checks, artifacts, usage) or, without inputs, the task's input
text. The server and the credentials come from the agent's environment, never
from the task (task options are stored with the task):

=========================  ==================================================
ORCHGPT_SMTP_HOST          server host name (required)
ORCHGPT_SMTP_PORT          port (default 587 for starttls, 465 for tls, 25 for none)
ORCHGPT_SMTP_SECURITY      ``starttls`` (default) | ``tls`` (implicit TLS) | ``none``
ORCHGPT_SMTP_USER          user name for AUTH (no AUTH when unset)
ORCHGPT_SMTP_PASSWORD      its password
ORCHGPT_SMTP_FROM          sender address (default: the user, else orchgpt@<host>)
ORCHGPT_SMTP_TO            recipients, comma-separated (option ``to`` overrides)
ORCHGPT_SMTP_CA_FILE       extra CA bundle to verify the server's certificate
ORCHGPT_SMTP_TIMEOUT       seconds per network operation (20)
=========================  ==================================================

The server's certificate is always verified (host name included). Credentials
are never sent over an unencrypted connection to another host than loopback.

Options: ``to``, ``subject``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import smtplib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from orchgpt import logs
from orchgpt.models import TaskResult

from ..errors import TaskFailed
from ..runtime import Agent, Outcome, TaskContext, register
from ._team import checks_of

log = logs.get("agentd.mailer")

SECURITIES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


class MailConfigError(TaskFailed):
    """The SMTP settings are missing or malformed."""


@dataclass
class SmtpConfig:
    host: str
    port: int
    security: str
    user: str = ""
    password: str = ""
    sender: str = ""
    to: tuple[str, ...] = ()
    ca_file: str = ""
    timeout_s: float = 20.0

    def __repr__(self) -> str:  # never show the password
        return (
            f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"user={self.user!r}, password={'set' if self.password else 'none'})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpConfig:
        e = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return (e.get(f"ORCHGPT_SMTP_{name}") or default).strip()

        host = get("HOST")
        if not host:
            raise MailConfigError(
                "no SMTP server is configured: set ORCHGPT_SMTP_HOST (and ORCHGPT_SMTP_PORT, "
                "ORCHGPT_SMTP_SECURITY, ORCHGPT_SMTP_USER, ORCHGPT_SMTP_PASSWORD) for the mailer"
            )
        security = get("SECURITY", "starttls").lower()
        if security not in SECURITIES:
            raise MailConfigError(f"ORCHGPT_SMTP_SECURITY={security!r} must be one of {', '.join(SECURITIES)}")
        port_s = get("PORT")
        try:
            port = int(port_s) if port_s else DEFAULT_PORTS[security]
        except ValueError:
            raise MailConfigError(f"ORCHGPT_SMTP_PORT={port_s!r} is not a port number") from None
        if not 0 < port < 65536:
            raise MailConfigError(f"ORCHGPT_SMTP_PORT={port} is not a port number")
        try:
            timeout = float(get("TIMEOUT", "20"))
        except ValueError:
            raise MailConfigError(f"ORCHGPT_SMTP_TIMEOUT={get('TIMEOUT')!r} is not a number") from None
        user = get("USER")
        sender = get("FROM") or (user if "@" in user else f"orchgpt@{socket.gethostname()}")
        ca_file = get("CA_FILE")
        if ca_file and not os.path.isfile(ca_file):
            raise MailConfigError(f"ORCHGPT_SMTP_CA_FILE={ca_file!r}: no such file")
        return cls(
            host,
            port,
            security,
            user,
            e.get("ORCHGPT_SMTP_PASSWORD", ""),
            sender,
            parse_recipients(get("TO")),
            ca_file,
            timeout,
        )


def parse_recipients(text: str) -> tuple[str, ...]:
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        _, addr = parseaddr(part)
        if "@" not in addr or any(c in addr for c in "\r\n "):
            raise MailConfigError(f"not an e-mail address: {part!r}")
        out.append(addr)
    return tuple(out)


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- the message


def _result_lines(r: TaskResult) -> list[str]:
    head = f"{r.agent_type or 'task'} {r.task_id}: {r.state}"
    if r.agent_id:
        head += f" on {r.agent_id}"
    out = [head]
    text = (r.output if r.ok else r.error) or r.output
    if text:
        out.append("  " + text.strip().replace("\n", "\n  "))
    checks = checks_of(r)
    if checks:
        out.append(f"  checks: {checks}")
    if r.artifacts:
        out.append("  files: " + ", ".join(a.path for a in r.artifacts))
    if r.usage.calls or r.usage.total_tokens:
        out.append(
            f"  usage: {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens, "
            f"${r.usage.cost_usd:.4f}"
        )
    if r.data.get("requeued"):
        out.append(f"  requeued: {r.data['requeued']}")
    return out


def summary(ctx: TaskContext) -> tuple[str, str]:
    """(subject, body) of the e-mail."""
    inputs = ctx.task.inputs
    if not inputs:
        text = ctx.task.input.strip()
        if not text:
            raise TaskFailed("nothing to send: give the text to mail, or results as inputs")
        first = text.splitlines()[0][:70]
        return f"orchgpt: {first}", text + "\n"
    ok = sum(1 for r in inputs if r.ok)
    main = inputs[-1]
    subject = (
        f"orchgpt: {main.agent_type or 'task'} {main.task_id} {main.state}"
        if len(inputs) == 1
        else f"orchgpt: {ok} of {len(inputs)} tasks succeeded"
    )
    body = []
    if ctx.task.input.strip():
        body += [ctx.task.input.strip(), ""]
    for r in inputs:
        body += [*_result_lines(r), ""]
    return subject, "\n".join(body)


def build_message(cfg: SmtpConfig, to: tuple[str, ...], subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=cfg.sender.rpartition("@")[2] or None)
    msg["X-Mailer"] = "orchgpt mailer"
    msg.set_content(body)
    return msg


# ---------------------------------------------------------------- sending


def send(cfg: SmtpConfig, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
    """Deliver over SMTP (blocking); raises TaskFailed naming what went wrong."""
    where = f"{cfg.host}:{cfg.port}"
    if cfg.user and cfg.security == "none" and not _loopback(cfg.host):
        raise MailConfigError(
            f"refusing to send the SMTP password to {where} without encryption: "
            "set ORCHGPT_SMTP_SECURITY=starttls or tls"
        )
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    try:
        smtp: smtplib.SMTP
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
        with smtp:
            smtp.ehlo()
            if cfg.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise TaskFailed(
                        f"the SMTP server {where} does not offer STARTTLS; use ORCHGPT_SMTP_SECURITY=tls or none"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.user:
                _login(smtp, cfg.user, cfg.password)
            return smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise TaskFailed(
            f"the SMTP server {where} refused the credentials of {cfg.user!r}: {exc.smtp_code} {_text(exc.smtp_error)}"
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise TaskFailed(f"the SMTP server {where} does not support this: {exc}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{a} ({c} {_text(m)})" for a, (c, m) in exc.recipients.items())
        raise TaskFailed(f"the SMTP server {where} refused every recipient: {refused}") from None
    except smtplib.SMTPSenderRefused as exc:
        raise TaskFailed(
            f"the SMTP server {where} refused the sender {exc.sender!r}: {exc.smtp_code} {_text(exc.smtp_error)}"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise TaskFailed(f"the SMTP server {where} answered {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except ssl.SSLCertVerificationError as exc:
        raise TaskFailed(
            f"the certificate of the SMTP server {where} is not trusted: {exc.verify_message}; "
            "set ORCHGPT_SMTP_CA_FILE to its CA"
        ) from None
    except ssl.SSLError as exc:
        raise TaskFailed(f"TLS with the SMTP server {where} failed: {exc.reason or exc}") from None
    except smtplib.SMTPServerDisconnected as exc:
        raise TaskFailed(f"the SMTP server {where} closed the connection: {exc or 'no reason given'}") from None
    except TimeoutError:
        raise TaskFailed(f"the SMTP server {where} did not answer within {cfg.timeout_s:g}s") from None
    except OSError as exc:
        raise TaskFailed(f"cannot reach the SMTP server {where}: {exc.strerror or exc}") from None


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with one mechanism the server offers (PLAIN, else LOGIN, else CRAM-MD5).

    smtplib's ``login`` tries each in turn after a refusal, which some servers
    answer by waiting for more; one clear refusal is what we want.
    """
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError(
            "the server offers no SMTP AUTH; unset ORCHGPT_SMTP_USER to send without authentication"
        )
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    smtp.user, smtp.password = user, password
    for mech, how in (("PLAIN", smtp.auth_plain), ("LOGIN", smtp.auth_login), ("CRAM-MD5", smtp.auth_cram_md5)):
        if mech in offered:
            smtp.auth(mech, how, initial_response_ok=True)
            return
    raise smtplib.SMTPNotSupportedError(f"no supported AUTH mechanism among {' '.join(offered) or 'none'}")


def _text(b: bytes | str) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else str(b)


@register
class MailerAgent(Agent):
    type = "mailer"
    capabilities = ("mail", "smtp", "notify")
    description = "sends a summary e-mail of a task's result over SMTP"
    needs_model = False  # agentd may start it without OPENAI_* settings

    async def run(self, ctx: TaskContext) -> Outcome:
        cfg = SmtpConfig.from_env()
        to = parse_recipients(ctx.task.options.get("to", "")) or cfg.to
        if not to:
            raise MailConfigError("no recipient: set ORCHGPT_SMTP_TO or the task option 'to'")
        subject, body = summary(ctx)
        subject = ctx.task.options.get("subject") or subject
        msg = build_message(cfg, to, subject, body)
        ctx.status(f"sending to {', '.join(to)} via {cfg.host}:{cfg.port} ({cfg.security})")
        refused = await asyncio.wait_for(asyncio.to_thread(send, cfg, msg), cfg.timeout_s * 4 + 5)
        delivered = [a for a in to if a not in refused]
        log.info(
            "mail_sent",
            task_id=ctx.task.task_id,
            host=cfg.host,
            port=cfg.port,
            security=cfg.security,
            recipients=len(delivered),
            refused=len(refused),
        )
        out = f"sent {subject!r} to {', '.join(delivered)}"
        if refused:
            out += f"; refused: {', '.join(refused)}"
        return Outcome(
            output=out,
            data={
                "message_id": str(msg["Message-ID"]),
                "to": ", ".join(delivered),
                "refused": ", ".join(refused),
                "subject": subject,
                "server": f"{cfg.host}:{cfg.port}",
                "security": cfg.security,
                "checks": f"delivered to {len(delivered)} of {len(to)}",
            },
        )
