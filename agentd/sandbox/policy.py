"""What the operator decided about the sandbox (`SandboxPolicy`), the limits of one command
(`Limits`), and the refusal to run generated code without namespaces unless allowed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import TaskFailed
from .uids import UID_BASE, UID_COUNT, UidAllocator

if TYPE_CHECKING:
    from ..settings import AgentSettings

WEAK_FLAG = "--allow-weak-sandbox"
WEAK_ENV = "ORCHGPT_ALLOW_WEAK_SANDBOX"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class WeakSandboxRefused(TaskFailed):
    """No namespaces are available and the operator did not allow a weak sandbox: the
    task fails with this message (it names the flag), the model is not asked to retry."""


# ---------------------------------------------------------------- policy


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    v = env.get(name, "").strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={env[name]!r} is not a boolean (use 1 or 0)")


def _default_state_dir() -> str:
    if os.geteuid() == 0 and os.path.isdir("/run") and os.access("/run", os.W_OK):
        return "/run/orchgpt-sandbox"
    return os.path.join(tempfile.gettempdir(), f"orchgpt-sandbox-{os.geteuid()}")


@dataclass(frozen=True)
class SandboxPolicy:
    """What the operator decided about the sandbox (agentd builds one at start-up).

    protected       paths never visible inside (certificates, keys, the data dir)
    workspace_root  where task workspaces live: hidden, only the task's own is bound in
    read_only       extra directories visible read-only (e.g. a toolchain under /opt)
    namespaces      False: never use namespaces (as if the kernel had none)
    allow_weak      run generated code even without namespaces (limits only)
    uid_first/uid_count  the range sandbox uids are allocated from (as root)
    state_dir       the allocator's state (0700; shared by the agents of one host)
    """

    protected: tuple[str, ...] = ()
    workspace_root: str | None = None
    read_only: tuple[str, ...] = ()
    namespaces: bool = True
    allow_weak: bool = False
    uid_first: int = UID_BASE
    uid_count: int = UID_COUNT
    state_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SandboxPolicy:
        """ORCHGPT_ALLOW_WEAK_SANDBOX, ORCHGPT_SANDBOX_ISOLATION (auto|none),
        ORCHGPT_SANDBOX_READ_ONLY (paths, ':'-separated), and ORCHGPT_CERTS,
        ORCHGPT_DATA_DIR, ORCHGPT_WORKSPACE_ROOT (protected)."""
        env = os.environ if environ is None else environ
        wanted = env.get("ORCHGPT_SANDBOX_ISOLATION", "auto").strip().lower() or "auto"
        if wanted not in ("auto", "none", "off"):
            raise ValueError(f"ORCHGPT_SANDBOX_ISOLATION={wanted!r}: use auto or none")
        protected = [env[k] for k in ("ORCHGPT_CERTS", "ORCHGPT_DATA_DIR") if env.get(k)]
        ro = [p for p in env.get("ORCHGPT_SANDBOX_READ_ONLY", "").split(os.pathsep) if p]
        root = env.get("ORCHGPT_WORKSPACE_ROOT") or None
        policy = cls(
            protected=tuple(os.path.abspath(p) for p in protected),
            workspace_root=os.path.abspath(root) if root else None,
            read_only=tuple(os.path.abspath(p) for p in ro),
            namespaces=wanted == "auto",
            allow_weak=_env_bool(env, WEAK_ENV),
        )
        return replace(policy, **overrides)

    def protect(self, *paths: str | os.PathLike[str] | None) -> SandboxPolicy:
        """A copy with more protected paths."""
        more = [os.path.abspath(os.fspath(p)) for p in paths if p]
        return replace(self, protected=tuple(sorted({*self.protected, *more})))

    def allocator(self) -> UidAllocator:
        return UidAllocator(self.state_dir or _default_state_dir(), self.uid_first, self.uid_count)


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0
    memory_mb: int = 1024
    cpu_s: int | None = None  # default: the time limit rounded up, plus one second
    file_size_mb: int = 64
    processes: int = 256  # only enforced when the command runs under its own uid
    output_bytes: int = 64_000  # per stream kept (head and tail), the rest is dropped

    @classmethod
    def from_settings(cls, settings: AgentSettings | None) -> Limits:
        if settings is None:
            return cls()
        return cls(
            timeout_s=float(getattr(settings, "sandbox_timeout_s", 60.0)),
            memory_mb=int(getattr(settings, "sandbox_memory_mb", 1024)),
        )
