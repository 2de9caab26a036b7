"""Issue 10, finding 4: a revoked certificate is refused at its next call, and its open
streams are closed with the reason; `orchgpt certs revoke` / `renew`; shorter agent lifetimes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from orchgpt import codec
from orchgpt.batching import Outbox
from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.iac.v1 import iac_pb2_grpc as pb_grpc
from orchgpt.tls import secure_channel
from tests.support.mesh import ROOT, Daemon, await_for, issue, start_agent

pytestmark = pytest.mark.timeout(60)


def orchgpt_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "orchgpt", *args], capture_output=True, text=True, env=env, timeout=30)


async def _connect_agent(daemon: Daemon, name: str, certs_dir: Path | None = None):  # type: ignore[no-untyped-def]
    paths = paths_for(certs_dir, name) if certs_dir else issue(daemon.certs, name, "agent")
    ch = secure_channel(daemon.address, paths)
    out = Outbox()
    out.put(codec.new_envelope(pb.REGISTER, name, register=pb.Register(agent_type="revtype")))
    call = pb_grpc.MeshStub(ch).Connect(out.iterate())
    return ch, out, call


async def _collect(call: object, timeout: float) -> tuple[list[pb.Envelope], grpc.aio.AioRpcError | None]:
    """Every envelope until the stream ends (and how it ended)."""
    got: list[pb.Envelope] = []

    async def run() -> grpc.aio.AioRpcError | None:
        try:
            async for batch in call:  # type: ignore[attr-defined]
                got.extend(batch.envelopes)
        except grpc.aio.AioRpcError as exc:
            return exc
        return None

    return got, await asyncio.wait_for(run(), timeout)


async def _registered(call: object) -> None:
    async def first() -> None:
        async for batch in call:  # type: ignore[attr-defined]
            if any(e.type == pb.REGISTERED for e in batch.envelopes):
                return
        raise AssertionError("stream ended before REGISTERED")

    await asyncio.wait_for(first(), 10)


async def test_revoking_an_agent_closes_its_stream_and_refuses_it(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    # The hand-made agent below never answers PINGs: with the tests' 0.5 s heartbeat it is
    # dropped for silence after 2 s, which raced the revocation (the `certs revoke` process
    # alone can take 2 s on a loaded machine). A 10 s heartbeat leaves the revocation alone.
    daemon: Daemon = daemon_factory("--no-spawn", "--crl-poll-interval", "0.5", "--heartbeat-interval", "10").start()
    ch, out, call = await _connect_agent(daemon, "rev-agent")
    try:
        await _registered(call)
        r = orchgpt_cli("certs", "revoke", "rev-agent", "--dir", str(daemon.certs))
        assert r.returncode == 0, r.stderr
        assert "revoked serial" in r.stdout
        crl = daemon.certs / "crl.pem"
        assert crl.stat().st_mode & 0o777 == 0o644
        ca = x509.load_pem_x509_certificate((daemon.certs / "ca.pem").read_bytes())
        parsed = x509.load_pem_x509_crl(crl.read_bytes())
        assert parsed.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        serial = x509.load_pem_x509_certificate((daemon.certs / "rev-agent.pem").read_bytes()).serial_number
        assert parsed.get_revoked_certificate_by_serial_number(serial) is not None

        # the open stream: an ERROR envelope naming the revocation, then the end
        envs, err = await _collect(call, timeout=10)
        errors = [e for e in envs if e.type == pb.ERROR]
        assert errors and "certificate revoked" in errors[-1].error.message, envs
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "certificate revoked" in (err.details() or "")
    finally:
        out.close()
        await ch.close()
    # the agent is gone from the registry
    async with daemon.client() as c:
        assert [a.agent_id for a in await c.list_agents()] == []
    # a new connection is refused
    ch, out, call = await _connect_agent(daemon, "rev-agent", certs_dir=daemon.certs)
    try:
        _, err = await _collect(call, timeout=10)
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "certificate revoked" in (err.details() or "")
    finally:
        out.close()
        await ch.close()
    assert daemon.proc is not None and daemon.proc.poll() is None


async def test_revoking_a_client_closes_its_watch_and_refuses_its_calls(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--crl-poll-interval", "0.5").start()
    paths = issue(daemon.certs, "rev-user", "client")
    async with secure_channel(daemon.address, paths) as ch:
        stub = pb_grpc.MeshStub(ch)
        await stub.ListAgents(pb.ListAgentsRequest(), timeout=5)  # allowed before
        watch = stub.Watch(pb.WatchRequest())
        await asyncio.sleep(0.3)  # let the Watch be open on the daemon's side
        r = orchgpt_cli("certs", "revoke", "rev-user", "--dir", str(daemon.certs))
        assert r.returncode == 0, r.stderr
        _, err = await _collect(watch, timeout=10)
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "certificate revoked" in (err.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await stub.ListAgents(pb.ListAgentsRequest(), timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "certificate revoked" in (ei.value.details() or "")
    # everyone else is unaffected
    async with daemon.client() as c:
        await c.check()
        await c.list_agents()


async def test_sighup_reloads_the_list_at_once(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--crl-poll-interval", "3600").start()
    paths = issue(daemon.certs, "hup-user", "client")
    async with secure_channel(daemon.address, paths) as ch:
        watch = pb_grpc.MeshStub(ch).Watch(pb.WatchRequest())
        await asyncio.sleep(0.3)
        assert orchgpt_cli("certs", "revoke", "hup-user", "--dir", str(daemon.certs)).returncode == 0
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        _, err = await _collect(watch, timeout=10)
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert daemon.proc.poll() is None  # SIGHUP did not stop the daemon
    assert "sighup_reload" in daemon.log()


async def test_renew_issues_a_new_certificate_and_revokes_the_old_one(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--crl-poll-interval", "0.5").start()
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    issue(daemon.certs, "renew-user", "client")
    for f in ("ca.pem", "renew-user.pem", "renew-user-key.pem"):
        (old_dir / f).write_bytes((daemon.certs / f).read_bytes())
    r = orchgpt_cli("certs", "renew", "renew-user", "--dir", str(daemon.certs))
    assert r.returncode == 0, r.stderr
    new = x509.load_pem_x509_certificate((daemon.certs / "renew-user.pem").read_bytes())
    old = x509.load_pem_x509_certificate((old_dir / "renew-user.pem").read_bytes())
    assert new.serial_number != old.serial_number and new.subject == old.subject
    async with secure_channel(daemon.address, paths_for(daemon.certs, "renew-user")) as ch:
        await pb_grpc.MeshStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)
    async with secure_channel(daemon.address, paths_for(old_dir, "renew-user")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await pb_grpc.MeshStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_agent_certificates_are_short_lived_and_days_is_an_option(certs: Path) -> None:
    r = orchgpt_cli("certs", "issue", "short-agent", "--role", "agent", "--dir", str(certs))
    assert r.returncode == 0, r.stderr
    c = x509.load_pem_x509_certificate((certs / "short-agent.pem").read_bytes())
    life = c.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=89) < life <= dt.timedelta(days=90)
    r = orchgpt_cli("certs", "issue", "long-user", "--role", "client", "--dir", str(certs), "--days", "400")
    assert r.returncode == 0, r.stderr
    c = x509.load_pem_x509_certificate((certs / "long-user.pem").read_bytes())
    assert dt.timedelta(days=399) < c.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=400)


def test_revoke_by_serial_and_unknown_name(certs: Path) -> None:
    issue(certs, "by-serial", "agent")
    serial = x509.load_pem_x509_certificate((certs / "by-serial.pem").read_bytes()).serial_number
    r = orchgpt_cli("certs", "revoke", "--serial", f"{serial:x}", "--dir", str(certs))
    assert r.returncode == 0, r.stderr
    crl = x509.load_pem_x509_crl((certs / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    r = orchgpt_cli("certs", "revoke", "nobody", "--dir", str(certs))
    assert r.returncode == 1 and "no certificate" in r.stderr


async def test_a_running_agentd_whose_certificate_is_revoked_stops_with_the_reason(daemon_factory, agents) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory("--no-spawn", "--crl-poll-interval", "0.5").start()
    a = start_agent(daemon, "rev-echo", "echo")
    agents.append(a)
    async with daemon.client() as c:

        async def registered() -> bool:
            return [x.agent_id for x in await c.list_agents()] == ["rev-echo"]

        await await_for(registered, 20, what="agentd to register")
        certs_dir = daemon.workdir / "agent-rev-echo" / "certs"
        r = orchgpt_cli(
            "certs", "revoke", "--serial", f"{_serial(certs_dir / 'rev-echo.pem'):x}", "--dir", str(daemon.certs)
        )
        assert r.returncode == 0, r.stderr
        await await_for(lambda: a.proc.poll() is not None, 20, what="agentd to stop")
        assert a.proc.returncode != 0
        assert "certificate revoked" in a.log(), a.log()[-2000:]
        assert await c.list_agents() == []


def _serial(pem: Path) -> int:
    return x509.load_pem_x509_certificate(pem.read_bytes()).serial_number
