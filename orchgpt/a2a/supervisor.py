"""External A2A agents the daemon runs itself (``a2a_agents`` in the settings, docs/a2a.md).

For each NAME = URL the daemon issues an agent certificate NAME (it needs the CA key, as for
the agents it spawns) under DATA_DIR/a2a-proxies/, and keeps one `orchgpt a2a add NAME URL`
process running: started with the daemon, started again (with a growing pause) when it exits,
stopped with the daemon. The proxy's own log is DATA_DIR/logs/a2a-NAME.log.

A client certificate for an agent that asks for mutual TLS (``a2a_agents_client_cert`` and
``a2a_agents_client_key``: NAME = FILE) is passed as ``--client-cert``/``--client-key``.
Credentials (``a2a_agents_auth``: NAME = VAR): the proxy of NAME is told ``--auth-env VAR`` and
gets the daemon's variable VAR in its environment (another proxy's variable is left out), so
the token is in neither the settings, a command line nor a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from .. import logs
from ..certs import CA
from ..errors import ConfigError
from ..mesh import AGENT_TYPE_RE

log = logs.get("orchgpt.a2a.proxies")

PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)  # before each restart of a proxy that exited
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ProxySupervisor:
    def __init__(
        self,
        agents: dict[str, str],
        certs_dir: Path,
        data_dir: Path,
        address: Any,
        ca_file: str = "",
        auth_env: str = "",  # one proxy of a declared type: the variable holding its token
        auth: dict[str, str] | None = None,
        client_certs: dict[str, str] | None = None,
        client_keys: dict[str, str] | None = None,
    ) -> None:
        for name, url in agents.items():
            if not AGENT_TYPE_RE.match(name):
                raise ConfigError(f"a2a_agents.{name}: an agent type is 1-32 lowercase letters, digits, '_' or '-'")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"a2a_agents.{name}: {url!r} is not an http(s) URL")
        self.auth = dict(auth or {})
        for name, var in self.auth.items():
            if name not in agents:
                raise ConfigError(f"a2a_agents_auth.{name}: there is no a2a_agents.{name} to give credentials to")
            if not _ENV_VAR.match(var):
                raise ConfigError(
                    f"a2a_agents_auth.{name}: not an environment variable name "
                    "(name the variable that holds the token; never the token)"
                )
            if not os.environ.get(var):
                raise ConfigError(
                    f"a2a_agents_auth.{name}: the environment variable {var} is not "
                    "set (it holds the token of that agent)"
                )
        self.client_certs = dict(client_certs or {})
        self.keys = dict(client_keys or {})
        for what, files in (("a2a_agents_client_cert", self.client_certs), ("a2a_agents_client_key", self.keys)):
            for name, path in files.items():
                if name not in agents:
                    raise ConfigError(f"{what}.{name}: there is no a2a_agents.{name}")
                if not Path(path).is_file():
                    raise ConfigError(f"{what}.{name}: no such file: {path}")
        for name in self.keys:
            if name not in self.client_certs:
                raise ConfigError(f"a2a_agents_client_key.{name}: a key without a2a_agents_client_cert.{name}")
        self.agents = agents
        self.certs_dir = certs_dir
        self.dir = data_dir / "a2a-proxies"
        self.log_dir = data_dir / "logs"
        self.address = address  # callable: the daemon's address once it listens
        self.ca_file = ca_file
        self.auth_env = auth_env  # an environment variable with a bearer token (its name only)
        self._tasks: list[asyncio.Task[None]] = []
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = False

    def start(self) -> None:
        try:
            ca = CA.load(self.certs_dir)
        except Exception as exc:
            raise ConfigError(f"a2a_agents: the daemon needs the CA key to run their proxies ({exc})") from None
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, url in self.agents.items():
            ca.issue_to(self.dir, name, "agent")
            self._tasks.append(asyncio.create_task(self._keep(name, url)))

    async def _keep(self, name: str, url: str) -> None:
        restarts = 0
        while not self._stopping:
            cmd = [
                sys.executable,
                "-m",
                "agentd.a2a_proxy",  # the proxy is an agent: orchgpt never imports agentd
                name,
                url,
                "--address",
                self.address(),
                "--certs",
                str(self.dir),
                "--workdir",
                str(self.dir / name),
            ]
            if self.ca_file:
                cmd += ["--ca-file", self.ca_file]
            if name in self.client_certs:  # mutual TLS with the external agent
                cmd += ["--client-cert", str(Path(self.client_certs[name]).resolve())]
                if name in self.keys:
                    cmd += ["--client-key", str(Path(self.keys[name]).resolve())]
            var = self.auth.get(name, "") or self.auth_env
            if var:
                cmd += ["--auth-env", var]
            others = {v for n, v in self.auth.items() if v != var}
            env = {k: v for k, v in os.environ.items() if k not in others}
            with open(self.log_dir / f"a2a-{name}.log", "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *cmd,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**env, "ORCHGPT_PARENT_PID": str(os.getpid())},
                )
            self._procs[name] = proc
            log.info("a2a_proxy_started", agent_type=name, url=url, pid=proc.pid)
            code = await proc.wait()
            self._procs.pop(name, None)
            if self._stopping:
                return
            pause = PAUSES[min(restarts, len(PAUSES) - 1)]
            restarts += 1
            log.warning("a2a_proxy_exited", agent_type=name, code=code, restart_in_s=pause)
            await asyncio.sleep(pause)

    async def stop(self) -> None:
        self._stopping = True
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for name, proc in list(self._procs.items()):
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                log.warning("a2a_proxy_killed", agent_type=name)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for t in self._tasks:
            t.cancel()
