"""``python -m agentd.sandbox``: what isolation generated code gets on this host.

Detects the mode, runs one probe command in a sandbox (its uid, hostname, what the
root directory holds, whether the certificate and data dirs of the environment are
visible) and prints one JSON object. Exit status 0 when namespaces are available,
3 when only a weak sandbox is (agentd then refuses generated code unless
``--allow-weak-sandbox``), 1 on a setup failure. Useful to check a container's
security options, e.g. ``docker run --rm --entrypoint python orchgpt -m agentd.sandbox``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from .core import Limits, Sandbox, SandboxPolicy, detect_isolation

PROBE = r"""
import json, os, sys
print(json.dumps({"uid": os.getuid(), "hostname": os.uname().nodename,
                  "root": sorted(os.listdir("/")),
                  "visible": {p: os.path.exists(p) for p in sys.argv[1:]}}))
"""


async def check() -> int:
    policy = SandboxPolicy.from_env()
    iso = await detect_isolation(policy=policy)
    report: dict[str, object] = {"isolation": iso.mode, "reason": iso.reason}
    if iso.mode == "none":
        report["generated_code"] = (
            "refused" if not policy.allow_weak else "runs with limits only (weak sandbox allowed)"
        )
        print(json.dumps(report))
        return 3
    with tempfile.TemporaryDirectory(prefix="orchgpt-sandbox-check-") as d:
        sb = Sandbox(Path(d), Limits(timeout_s=20), policy=policy)
        r = await sb.run([sys.executable, "-c", PROBE, *policy.protected])
    report["notes"] = r.notes
    if r.exit_code != 0:
        report["error"] = (r.stderr or r.stdout).strip()[-500:]
        print(json.dumps(report))
        return 1
    report["inside"] = json.loads(r.stdout)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(check()))
