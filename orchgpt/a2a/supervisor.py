"""External A2A agents the daemon runs itself (``a2a_agents`` in the settings, docs/a2a.md).

For each NAME = URL the daemon issues an agent certificate NAME (it needs the CA key, as for
the agents it spawns) under DATA_DIR/a2a-proxies/, and keeps one `orchgpt a2a add NAME URL`
process running: started with the daemon, started again (with a growing pause) when it exits,
stopped with the daemon. The proxy's own log is DATA_DIR/logs/a2a-NAME.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from .. import logs
from ..certs import CA
from ..errors import ConfigError
from ..mesh import AGENT_TYPE_RE

log = logs.get("orchgpt.a2a.proxies")

PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)  # before each restart of a proxy that exited


class ProxySupervisor:
    def __init__(
        self,
        agents: dict[str, str],
        certs_dir: Path,
        data_dir: Path,
        address: Any,
        ca_file: str = "",
        auth_env: str = "",
    ) -> None:
        for name, url in agents.items():
            if not AGENT_TYPE_RE.match(name):
                raise ConfigError(
                    f"a2a_agents.{name}: an agent type is 1-32 lowercase letters, "
                    "digits, '_' or '-'"
                )
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"a2a_agents.{name}: {url!r} is not an http(s) URL")
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
            raise ConfigError(
                f"a2a_agents: the daemon needs the CA key to run their proxies ({exc})"
            ) from None
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
            if self.auth_env:
                cmd += ["--auth-env", self.auth_env]
            with open(self.log_dir / f"a2a-{name}.log", "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *cmd,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**os.environ, "ORCHGPT_PARENT_PID": str(os.getpid())},
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
