"""The optimizer's service checks after refactoring: the same route, contract and schemathesis
checks the backend ran (one start of the service in the sandbox), so that a refactoring that
keeps the tests green but breaks the running service is caught and goes back to the model."""

from __future__ import annotations

from orchgpt.checks import FAILED, PASSED, SKIPPED, Check

from ..checks import contract, fuzz
from ..workspace import Workspace
from ._backend_service import MANIFEST, check_routes, read_manifest
from ._llm_agent import Session
from ._team import read_shared


async def service_checks(s: Session, ws: Workspace) -> tuple[list[Check], list[str]]:
    """The service's checks after refactoring, and the problems for the model ([] when none,
    or when the project is not a web service with a usable service.json)."""
    if not ws.exists(MANIFEST):
        return [Check("routes", f"{MANIFEST} probe", SKIPPED, f"not a web service (no {MANIFEST})", required=False)], []
    _m, bad = read_manifest(ws)
    if bad:
        return [Check("routes", f"{MANIFEST} probe", SKIPPED, bad, required=False)], []
    design = contract.design_routes(read_shared(s.ctx, "ARCHITECTURE.md"))
    routes, agreed, fuzzed = await check_routes(s, ws, design, fuzz.examples(s.ctx.task.options, s.ctx.log))
    checks = [Check("routes", f"{MANIFEST} probe", PASSED if routes.ok else FAILED, routes.summary)]
    problems = [] if routes.ok else [routes.problem]
    if agreed is not None:
        checks.append(Check("contract", contract.TOOL, PASSED if agreed.ok else FAILED, agreed.summary()))
        problems += [] if agreed.ok else [contract.feedback(agreed)]
    if fuzzed is not None:
        checks.append(fuzzed.check)
        problems += [fuzzed.feedback] if fuzzed.feedback else []
    return checks, problems
