"""agentd's sandbox policy at start-up: what to protect, and whether a weak sandbox is allowed."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from orchgpt import logs
from orchgpt.certs import CertPaths

from .errors import AgentdError
from .sandbox import WEAK_ENV, WEAK_FLAG, SandboxPolicy, detect_isolation

log = logs.get("agentd.sandbox")


async def sandbox_policy(certs: CertPaths, ws_root: Path, allow_weak: bool) -> SandboxPolicy:
    """The policy from the environment, the flags and the agent's own paths; logs the
    isolation this host gives (one line) and warns when generated code will be refused."""
    try:
        policy = SandboxPolicy.from_env()
    except ValueError as exc:
        raise AgentdError(str(exc)) from None
    if allow_weak:
        policy = replace(policy, allow_weak=True)
    policy = policy.protect(
        certs.ca,
        certs.cert,
        certs.key,
        certs.ca.parent,
        certs.cert.parent,
        certs.key.parent,
        os.environ.get("ORCHGPT_CERTS"),
    )
    policy = replace(policy, workspace_root=str(ws_root))
    iso = await detect_isolation(policy=policy)
    if iso.mode == "none" and not policy.allow_weak:
        log.warning(
            "sandbox_unavailable",
            reason=iso.reason,
            hint=f"generated code is refused; {WEAK_FLAG} or {WEAK_ENV}=1 runs it with resource limits only",
        )
    else:
        log.info("sandbox", isolation=iso.mode, reason=iso.reason, weak_allowed=policy.allow_weak)
    return policy
