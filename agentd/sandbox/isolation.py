"""Which confinement this machine gives (`Isolation`): probed once per process."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .policy import SandboxPolicy

NS_FLAGS = ("--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc")


@dataclass(frozen=True)
class Isolation:
    """What confinement this machine gives (detected once, see `detect_isolation`)."""

    mode: str  # "root-ns" | "user-ns" | "none"
    reason: str = ""  # why a stronger mode was not available

    @property
    def network(self) -> bool:
        return self.mode != "none"

    @property
    def mounts(self) -> bool:
        return self.mode != "none"


def _probe(argv: list[str]) -> str:
    """Run argv; '' when it exits 0, otherwise its error text."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=10,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    except OSError as exc:
        return str(exc)
    if proc.returncode == 0:
        return ""
    return proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"


@functools.lru_cache(maxsize=4)
def _detect(namespaces: bool, euid: int) -> Isolation:
    """Which isolation works here; a fact of the host, probed once per process."""
    if not namespaces:
        return Isolation("none", "namespaces turned off by the sandbox policy")
    if not sys.platform.startswith("linux"):
        return Isolation("none", f"namespaces need Linux (this is {sys.platform})")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Isolation("none", "unshare(1) from util-linux is not installed")
    true = shutil.which("true") or "/bin/true"
    reasons = []
    if euid == 0:
        err = _probe([unshare, *NS_FLAGS, true])
        if not err:
            return Isolation("root-ns")
        reasons.append(f"root namespaces refused ({err})")
    err = _probe([unshare, "--user", "--map-root-user", *NS_FLAGS, true])
    if not err:
        return Isolation("user-ns", "; ".join(reasons))
    reasons.append(f"user namespaces refused ({err})")
    return Isolation("none", "; ".join(reasons))


async def detect_isolation(refresh: bool = False, policy: SandboxPolicy | None = None) -> Isolation:
    """Find out (once per process) which isolation mode works here."""
    import asyncio

    if policy is None:
        policy = SandboxPolicy.from_env()
    if refresh:
        _detect.cache_clear()
    return await asyncio.to_thread(_detect, policy.namespaces, os.geteuid())
