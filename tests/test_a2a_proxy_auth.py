"""Credentials of the external A2A agents the daemon runs proxies for (issue 20): the settings
name an environment variable (``--a2a-agent-auth NAME=VAR``, TOML ``[a2a_agents_auth]``), the
daemon's proxy sends its token as a bearer token to an agent that refuses requests without it,
and the token appears in no log and on no command line. Mistakes stop the daemon at start with
the setting named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("a2a.client")

from orchgpt.models import Action, Command
from tests.support.mesh import Daemon, await_for, wait_for

pytestmark = pytest.mark.timeout(90)
TOKEN = "s3cret-upper-token-42"
ROOT = Path(__file__).resolve().parents[1]


def start_guarded_upper(
    tmp_path: Path, guard: str = "UPPER_REQUIRE_TOKEN", value: str = TOKEN
) -> tuple[subprocess.Popen[bytes], str]:
    """tests/support/a2a_upper.py, refusing (401) any request without the token (``guard``:
    UPPER_REQUIRE_TOKEN: a bearer token; UPPER_API_KEY: the header its card declares)."""
    port_file = tmp_path / "upper.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.a2a_upper", str(port_file)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "upper.log", "wb"),
        env={**os.environ, "PYTHONPATH": str(ROOT), guard: value},
    )
    wait_for(lambda: port_file.exists() or proc.poll() is not None, 20, what="the A2A agent")
    assert proc.poll() is None, (tmp_path / "upper.log").read_text()
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def _proxy_pids(d: Daemon) -> list[int]:
    import json

    return [json.loads(line)["pid"] for line in d.log().splitlines() if '"a2a_proxy_started"' in line]


async def test_the_daemons_proxy_sends_the_configured_bearer_token(daemon_factory, tmp_path: Path) -> None:
    upper, url = start_guarded_upper(tmp_path)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            card = await http.get(f"{url}/.well-known/agent-card.json")
        assert card.status_code == 401  # the agent really wants the token
        d: Daemon = daemon_factory(
            "--a2a-agents",
            f"upper={url}",
            "--a2a-agent-auth",
            "upper=UPPER_TOKEN",
            env={"UPPER_TOKEN": TOKEN, "OTHER_TOKEN": "not-for-upper"},
        ).start()
        async with d.client() as mesh:

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 30, what="the proxy to fetch the card and register")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "hello"))]
            assert events[-1].result is not None and events[-1].result.output == "HELLO"
        (pid,) = _proxy_pids(d)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert "--auth-env\0UPPER_TOKEN" in cmdline and TOKEN not in cmdline
        assert d.stop() == 0
        logs = [d.log(), *(p.read_text() for p in (d.data_dir / "logs").glob("*.log"))]
        assert not [text for text in logs if TOKEN in text]
        settings = [p for p in d.data_dir.rglob("*") if p.is_file() and p.suffix != ".db"]
        assert not [p for p in settings if TOKEN.encode() in p.read_bytes()]
    finally:
        upper.terminate()
        upper.wait(10)


@pytest.mark.parametrize(
    "auth, env, words",
    [
        (
            "nosuch=UPPER_TOKEN",
            {"UPPER_TOKEN": TOKEN},
            "a2a_agents_auth.nosuch: there is no a2a_agents.nosuch",
        ),
        ("upper=UNSET_TOKEN_VAR", {}, "the environment variable UNSET_TOKEN_VAR is not set"),
        ("upper=s3cret token", {}, "a2a_agents_auth.upper: not an environment variable name"),
    ],
)
def test_bad_credentials_settings_stop_the_daemon_by_name(
    daemon_factory, auth: str, env: dict[str, str], words: str
) -> None:
    d: Daemon = daemon_factory("--a2a-agents", "upper=http://127.0.0.1:9", "--a2a-agent-auth", auth, env=env)
    with pytest.raises(RuntimeError) as e:
        d.start()
    assert words in str(e.value) and "s3cret" not in str(e.value)  # a token given by mistake


async def test_the_token_goes_where_the_cards_scheme_says(daemon_factory, tmp_path: Path) -> None:
    """The card declares an API key in the header X-API-Key: a bearer token would be refused."""
    upper, url = start_guarded_upper(tmp_path, "UPPER_API_KEY")
    try:
        d: Daemon = daemon_factory(
            "--a2a-agents",
            f"upper={url}",
            "--a2a-agent-auth",
            "upper=UPPER_TOKEN",
            env={"UPPER_TOKEN": TOKEN},
        ).start()
        async with d.client() as mesh:

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 30, what="the proxy to register")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "keyed"))]
            assert events[-1].result is not None and events[-1].result.output == "KEYED", events[-1].text
        proxy_log = (d.data_dir / "logs" / "a2a-upper.log").read_text()
        assert "api key in header X-API-Key" in proxy_log and TOKEN not in proxy_log
    finally:
        upper.terminate()
        upper.wait(10)


def test_credential_by_scheme() -> None:
    from a2a.types import a2a_pb2 as a2a

    from agentd.a2a_auth import for_card

    def card(**schemes: a2a.SecurityScheme) -> a2a.AgentCard:
        c = a2a.AgentCard()
        for name, sch in schemes.items():
            c.security_schemes[name].CopyFrom(sch)
        return c

    assert for_card(a2a.AgentCard(), "t").headers == {"Authorization": "Bearer t"}
    key = a2a.SecurityScheme(api_key_security_scheme=a2a.APIKeySecurityScheme(location="query", name="key"))
    assert for_card(card(k=key), "t").params == {"key": "t"}
    basic = a2a.SecurityScheme(http_auth_security_scheme=a2a.HTTPAuthSecurityScheme(scheme="Basic"))
    assert for_card(card(b=basic), "u:p").headers == {"Authorization": "Basic dTpw"}
    assert for_card(card(b=basic), "dTpw").headers == {"Authorization": "Basic dTpw"}
    oauth = a2a.SecurityScheme(oauth2_security_scheme=a2a.OAuth2SecurityScheme())
    c = card(o=oauth, k=key)
    c.security_requirements.add().schemes["o"].SetInParent()  # the required one wins
    assert for_card(c, "t").headers == {"Authorization": "Bearer t"} and not for_card(c, "t").params
    mtls = a2a.SecurityScheme(mtls_security_scheme=a2a.MutualTlsSecurityScheme())
    assert for_card(card(m=mtls), "t").headers == {}


async def test_a_client_certificate_for_an_agent_that_asks_for_mutual_tls(daemon_factory, tmp_path: Path) -> None:
    import ssl

    from tests.support.mesh import make_certs

    ext = make_certs(tmp_path / "ext")  # the external agent's own CA, server and client certs
    upper, plain = start_guarded_upper(tmp_path, "UPPER_TLS_DIR", str(ext))
    url = plain.replace("http://127.0.0.1", "https://localhost")
    try:
        no_cert = ssl.create_default_context(cafile=str(ext / "ca.pem"))
        async with httpx.AsyncClient(verify=no_cert, timeout=10) as http:
            with pytest.raises(httpx.HTTPError):  # it wants a client certificate
                await http.get(f"{url}/.well-known/agent-card.json")
        config = tmp_path / "orchgpt.toml"
        config.write_text(
            f'a2a_agents_ca = "{ext}/ca.pem"\n'
            f'[a2a_agents]\nupper = "{url}"\n'
            f'[a2a_agents_client_cert]\nupper = "{ext}/cli.pem"\n'
            f'[a2a_agents_client_key]\nupper = "{ext}/cli-key.pem"\n'
        )
        d: Daemon = daemon_factory("--config", str(config)).start()
        async with d.client() as mesh:

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 30, what="the proxy to register over mutual TLS")
            events = [ev async for ev in mesh.submit(Command("upper", Action.RUN, "over tls"))]
            assert events[-1].result is not None and events[-1].result.output == "OVER TLS"
    finally:
        upper.terminate()
        upper.wait(10)


def test_a_client_certificate_setting_names_its_problem(daemon_factory, tmp_path: Path) -> None:
    config = tmp_path / "orchgpt.toml"
    config.write_text(
        f'[a2a_agents]\nupper = "https://localhost:9"\n[a2a_agents_client_cert]\nupper = "{tmp_path}/missing.pem"\n'
    )
    with pytest.raises(RuntimeError) as e:
        daemon_factory("--config", str(config)).start()
    assert "a2a_agents_client_cert.upper: no such file" in str(e.value)


async def test_stopping_orchgpt_a2a_add_stops_its_proxy(daemon_factory, tmp_path: Path) -> None:
    """`orchgpt a2a add` becomes the proxy (exec): a SIGTERM to it leaves nothing running."""
    import signal

    from tests.support.a2a_calls import start_proxy, start_upper
    from tests.support.mesh import pids_matching

    upper, url = start_upper(tmp_path)
    d: Daemon = daemon_factory().start()
    proxy = start_proxy(d, url, tmp_path)
    mine = f"agentd.a2a_proxy upper .*{tmp_path / 'proxy'}"
    try:
        async with d.client() as mesh:

            async def registered() -> bool:
                return bool(await mesh.list_agents("upper"))

            await await_for(registered, 30, what="the proxy to register")
        assert pids_matching(mine) == [proxy.pid]  # one process: the proxy itself
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(15)
        wait_for(lambda: not pids_matching(mine), 10, what="no proxy left running")
    finally:
        for pid in pids_matching(mine):  # (the old wrapper left its child behind)
            os.kill(pid, signal.SIGKILL)
        if proxy.poll() is None:
            proxy.kill()
        upper.terminate()
        upper.wait(10)
