"""An A2A client of the tests: the daemon's A2A URL, one identity's a2a-sdk client, messages,
streams."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a

from tests.support.mesh import Daemon, issue, wait_for

A2A_ARGS = ("--a2a-listen", "127.0.0.1:0")


def a2a_url(daemon: Daemon) -> str:
    """The A2A base URL the daemon logged (its port is picked at start)."""
    found: list[str] = []

    def logged() -> bool:
        for line in daemon.log().splitlines():
            if '"a2a_serving"' in line:
                found.append(json.loads(line)["base_url"])
                return True
        return False

    wait_for(logged, 20, what="the A2A listener")
    return found[-1]


def tls(certs: Path, name: str, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / f"{name}.pem"), str(certs / f"{name}-key.pem"))
    return ctx


class Caller:
    """One A2A client identity (its own httpx client with its certificate)."""

    def __init__(self, base: str, ctx: ssl.SSLContext) -> None:
        self.base = base
        self.http = httpx.AsyncClient(verify=ctx, timeout=30)

    async def client(self, agent_type: str = "echo"):  # type: ignore[no-untyped-def]
        return await create_client(f"{self.base}/{agent_type}", ClientConfig(httpx_client=self.http))

    async def close(self) -> None:
        await self.http.aclose()


def message(text: str, **options: str) -> a2a.SendMessageRequest:
    msg = a2a.Message(role=a2a.ROLE_USER, message_id=f"m-{text[:8]}", parts=[a2a.Part(text=text)])
    if options:
        msg.metadata.update({"options": options})
    return a2a.SendMessageRequest(message=msg)


async def stream(client, req: a2a.SendMessageRequest) -> list[a2a.StreamResponse]:  # type: ignore[no-untyped-def]
    return [ev async for ev in client.send_message(req)]


def final_state(events: list[a2a.StreamResponse]) -> int:
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    return states[-1] if states else a2a.TASK_STATE_UNSPECIFIED


def start_upper(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The external agent (a2a-sdk only) in its own process; its base URL."""
    port_file = tmp_path / "upper.port"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.a2a_upper", str(port_file)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "upper.log", "wb"),
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    wait_for(lambda: port_file.exists() or proc.poll() is not None, 20, what="the A2A agent")
    assert proc.poll() is None, (tmp_path / "upper.log").read_text()
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def start_proxy(d: Daemon, url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    issue(d.certs, "upper", "agent")
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchgpt",
            "a2a",
            "add",
            "upper",
            url,
            "--address",
            d.address,
            "--certs",
            str(d.certs),
            "--workdir",
            str(tmp_path / "proxy"),
        ],
        cwd=tmp_path,
        stdout=open(tmp_path / "proxy.log", "wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


class Webhook:
    """An HTTP receiver for push notifications (its first POST is answered 500)."""

    def __init__(self) -> None:
        self.got: list[tuple[int, str, dict]] = []  # (status answered, token, body)

    async def app(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        token = dict(scope["headers"]).get(b"x-a2a-notification-token", b"").decode()
        status = 500 if not self.got else 200
        self.got.append((status, token, json.loads(body)))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def states(self) -> list[str]:
        return [b["statusUpdate"]["status"]["state"] for s, _, b in self.got if s == 200]
