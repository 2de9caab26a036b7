"""The sandbox for generated code (see `core` for what it does, `launcher` for how;
`policy`, `isolation` and `results` for what goes in and comes out).

``from agentd.sandbox import Sandbox, Limits, SandboxPolicy, ...`` is the public API.
"""

from .core import (
    EXEC_FAILED_EXIT,
    HOSTNAME,
    PRIVATE_DIRS,
    SETUP_FAILED_EXIT,
    SYSTEM_DIRS,
    WEAK_ENV,
    WEAK_FLAG,
    Isolation,
    Limits,
    Sandbox,
    SandboxPolicy,
    SandboxResult,
    WeakSandboxRefused,
    clean_env,
    detect_isolation,
    summarize_tests,
)
from .launcher import LaunchSpec
from .uids import UidAllocator, UidLease

__all__ = [
    "EXEC_FAILED_EXIT",
    "HOSTNAME",
    "PRIVATE_DIRS",
    "SETUP_FAILED_EXIT",
    "SYSTEM_DIRS",
    "WEAK_ENV",
    "WEAK_FLAG",
    "Isolation",
    "LaunchSpec",
    "Limits",
    "Sandbox",
    "SandboxPolicy",
    "SandboxResult",
    "UidAllocator",
    "UidLease",
    "WeakSandboxRefused",
    "clean_env",
    "detect_isolation",
    "summarize_tests",
]
