"""Who may do what in the mesh: the one place authorization decisions are made.

Everything here is data (the tables below) plus small functions that read it; the
transport (orchgpt/servicer.py, agentd/link.py) calls them and acts on the Decision.
docs/security.md shows the same tables (tests/test_authz.py checks that they agree).

Principals come from the verified certificate (orchgpt.certs.Identity), never from a message:
``client``, ``admin`` (a client certificate with the extra OU "admin"), ``agent`` and
``server`` (the daemon's own certificate, which may call nothing).

Ownership: a task belongs to the identity that submitted it (``Task.submitted_by``,
``"role:name"``); a delegated sub-task inherits its root's owner. A client sees and acts on its
own tasks and sessions only, an admin on everyone's, an agent sees the tasks assigned to it and
their sub-tasks. A task the caller may not see is NOT_FOUND (its existence is not revealed); an
RPC the caller's role can never call is PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Callable

# The decision, the envelope rules and the open COMMANDs live in authz_decision.py,
# authz_envelopes.py and authz_commands.py; this is their import path too (authz.Decision, ...).
from .authz_commands import OpenCommands as OpenCommands
from .authz_decision import DAEMON as DAEMON
from .authz_decision import Decision as Decision
from .authz_decision import allow as allow
from .authz_decision import deny as deny
from .authz_envelopes import DAEMON_ONLY as DAEMON_ONLY
from .authz_envelopes import ENVELOPE_TABLE as ENVELOPE_TABLE
from .authz_envelopes import TARGETS as TARGETS
from .authz_envelopes import EnvelopeRule as EnvelopeRule
from .authz_envelopes import agent_accepts as agent_accepts
from .authz_envelopes import envelope_kind as envelope_kind
from .authz_envelopes import envelope_table_markdown as envelope_table_markdown
from .authz_envelopes import from_agent as from_agent
from .certs import Identity

# ---------------------------------------------------------------------------- principals
CLIENT, ADMIN, AGENT, SERVER = "client", "admin", "agent", "server"
PRINCIPALS = (CLIENT, ADMIN, AGENT, SERVER)


def principal(ident: Identity) -> str:
    """The column of the RPC table an identity is judged by."""
    if ident.role == "client":
        return ADMIN if ident.admin else CLIENT
    return ident.role


def owner_of(ident: Identity) -> str:
    """The owner string stored with a task (``Task.submitted_by``)."""
    return f"{ident.role}:{ident.name}"


# ---------------------------------------------------------------------------- RPCs
# Scopes: "all" (every object), "own" (the caller's own tasks and sessions), "assigned" (tasks
# assigned to the calling agent and their sub-tasks), "yes" (the RPC touches no owned object),
# "no" (PERMISSION_DENIED, whatever the arguments).
YES, NO, OWN, ALL, ASSIGNED = "yes", "no", "own", "all", "assigned"

RPC_TABLE: dict[str, dict[str, str]] = {
    #                    client  admin  agent     server
    "Connect": {CLIENT: NO, ADMIN: NO, AGENT: YES, SERVER: NO},
    "Submit": {CLIENT: OWN, ADMIN: OWN, AGENT: NO, SERVER: NO},
    "Watch(task)": {CLIENT: OWN, ADMIN: ALL, AGENT: ASSIGNED, SERVER: NO},
    "Watch(all)": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "ListAgents": {CLIENT: YES, ADMIN: YES, AGENT: YES, SERVER: NO},
    "GetTask": {CLIENT: OWN, ADMIN: ALL, AGENT: ASSIGNED, SERVER: NO},
    "ListTasks": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "CancelTask": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "Approve": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "FetchArtifact": {CLIENT: OWN, ADMIN: ALL, AGENT: ASSIGNED, SERVER: NO},
    "ListSessions": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "PublishSession": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "ListWorkflows": {CLIENT: YES, ADMIN: YES, AGENT: NO, SERVER: NO},
    "GetWorkflow": {CLIENT: YES, ADMIN: YES, AGENT: NO, SERVER: NO},
    "ListMessages": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "DeleteMessage": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "ClearSession": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "DeleteSession": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "CreateGraph": {CLIENT: OWN, ADMIN: OWN, AGENT: NO, SERVER: NO},
    "ListGraphs": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "GetGraph": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "DeleteGraph": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "ListBlocks": {CLIENT: YES, ADMIN: YES, AGENT: YES, SERVER: NO},
    # the Schedules service (schedules.proto, docs/schedules.md): a schedule is its adder's
    "AddSchedule": {CLIENT: OWN, ADMIN: OWN, AGENT: NO, SERVER: NO},
    "ListSchedules": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "GetSchedule": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "PauseSchedule": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "ResumeSchedule": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    "DeleteSchedule": {CLIENT: OWN, ADMIN: ALL, AGENT: NO, SERVER: NO},
    # many submissions on one stream (issue 17): each judged as a Submit (submit_access)
    "SubmitStream": {CLIENT: OWN, ADMIN: OWN, AGENT: NO, SERVER: NO},
}

_HOW = {
    "Connect": "connect as an agent",
    "Submit": "submit or change work (client role needed)",
    "SubmitStream": "submit or change work (client role needed)",
    "CancelTask": "submit or change work (client role needed)",
    "Approve": "submit or change work (client role needed)",
    "PublishSession": "submit or change work (client role needed)",
    "DeleteMessage": "submit or change work (client role needed)",
    "ClearSession": "submit or change work (client role needed)",
    "DeleteSession": "submit or change work (client role needed)",
    "ListTasks": "list tasks (client role needed; an agent sees only its own tasks, by id)",
    "ListSessions": "list sessions (client role needed)",
    "CreateGraph": "create graphs (client role needed)",
    "ListGraphs": "list graphs (client role needed)",
    "GetGraph": "read graphs (client role needed)",
    "DeleteGraph": "delete graphs (client role needed)",
    "Watch(all)": "watch every task (client role needed; an agent watches its own tasks by id)",
    **{
        n: "use schedules (client role needed)"
        for n in ("AddSchedule", "ListSchedules", "GetSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule")
    },
}


def rpc_scope(ident: Identity, rpc: str) -> str:
    return RPC_TABLE[rpc][principal(ident)]


def rpc(ident: Identity, name: str) -> Decision:
    """May this identity call this RPC at all? (Which objects it may touch: `task_access`.)"""
    scope = rpc_scope(ident, name)
    rule = f"rpc:{name}:{principal(ident)}"
    if scope == NO:
        need = "agent" if name == "Connect" else "client"
        what = _HOW.get(name, f"call {name}")
        return deny(
            rule,
            f"a {ident.role} certificate ({ident.name}) cannot {what}; "
            f"issue one with `orchgpt certs issue NAME --role {need}`",
        )
    return allow(rule)


def connect(ident: Identity) -> Decision:
    """Connect: the agent role, and not a name only the daemon may carry."""
    d = rpc(ident, "Connect")
    if not d:
        return d
    from .certs import RESERVED_NAMES

    if ident.name.lower() in RESERVED_NAMES:
        return deny(
            "reserved-name",
            f"the name {ident.name!r} is reserved for the orchestrator; an agent certificate cannot carry it",
        )
    return d


TaskLookup = Callable[[str], object]  # task id -> Task | None (duck-typed: domain objects)


def task_access(ident: Identity, rpc_name: str, task: object, lookup: TaskLookup) -> Decision:
    """May this identity touch this task through this RPC? Refused: NOT_FOUND (no leak)."""
    scope = rpc_scope(ident, rpc_name)
    rule = f"task:{rpc_name}:{principal(ident)}:{scope}"
    task_id = getattr(task, "task_id", "")
    if scope in (ALL, YES):
        return allow(rule)
    if scope == OWN and owns(owner_of(ident), task, lookup):
        return allow(rule)
    if scope == ASSIGNED and assigned_to(ident.name, task, lookup):
        return allow(rule)
    # the same answer as for a task that does not exist: the rule is logged, not told
    return Decision(False, rule, f"no task {task_id!r}", "NOT_FOUND")


def submit_access(
    ident: Identity,
    existing: object | None,
    lookup: TaskLookup,
    session_id: str,
    session_exists: bool,
    session_owned: bool,
) -> Decision:
    """Submit: a task id (idempotency key) or a session id that is someone else's is refused.

    Another owner's task id: ALREADY_EXISTS (resubmitting it would follow their task); another
    owner's session: PERMISSION_DENIED. An admin may add to anyone's session."""
    rule = f"submit:{principal(ident)}"
    if existing is not None and not owns(owner_of(ident), existing, lookup):
        return deny(
            f"{rule}:task-id",
            f"task id {getattr(existing, 'task_id', '')!r} is in use; choose another",
            code="ALREADY_EXISTS",
        )
    if session_exists and not session_owned and principal(ident) != ADMIN:
        return deny(
            f"{rule}:session",
            f"session {session_id!r} belongs to another user; start a new session or use one of yours",
        )
    return allow(rule)


WORKSPACE_OPTION = "workspace"  # agentd.workspace.WORKSPACE_OPTION: a sub-task's shared directory


def workspace_option(
    options: dict[str, str], lookup: TaskLookup, parent: object | None = None, owner: str | None = None
) -> Decision:
    """A task's option ``workspace`` (the directory it shares, agentd.workspace) may name only its
    parent's workspace or a name derived from it (``PARENT.sub``), a task of the parent's session,
    or (for a submitted task) a task of the submitter's own: never another user's workspace."""
    wanted = (options.get(WORKSPACE_OPTION) or "").strip()
    rule = "workspace-option"
    if not wanted:
        return allow(rule)
    if parent is not None:
        roots = {getattr(parent, "task_id", ""), (getattr(parent, "options", None) or {}).get(WORKSPACE_OPTION, "")}
        roots.discard("")
        if wanted in roots or any(wanted.startswith(r + ".") for r in roots):
            return allow(rule)
    names = [wanted] + [wanted[:i] for i, ch in enumerate(wanted) if ch == "."]
    for name in names[:16]:
        other = lookup(name) if name else None
        if other is None:
            continue
        if parent is not None and getattr(other, "session_id", None) == getattr(parent, "session_id", ""):
            return allow(rule)
        if owner is not None and owns(owner, other, lookup):
            return allow(rule)
    return deny(
        rule, f"option workspace={wanted!r} names no workspace of this task's parent, session or owner; message dropped"
    )


def delegation(options: dict[str, str], parent: object | None, lookup: TaskLookup) -> Decision:
    """DELEGATE_TASK under ``parent`` (that it is the sender's running task is Mesh.on_delegate's
    check): its ``workspace`` option must pass `workspace_option`."""
    if parent is None:
        return allow("workspace-option")
    return workspace_option(options, lookup, parent=parent)


def owns(owner: str, task: object, lookup: TaskLookup, hops: int = 32) -> bool:
    """The task, or its root, was submitted by ``owner`` (sub-tasks inherit the root's owner)."""
    if not owner:
        return False
    t: object | None = task
    for _ in range(hops):
        if t is None:
            return False
        if getattr(t, "submitted_by", "") == owner:
            return True
        parent = getattr(t, "parent_task_id", "")
        if not parent:
            return False
        t = lookup(parent)
    return False


def assigned_to(agent_id: str, task: object, lookup: TaskLookup, hops: int = 32) -> bool:
    """The task, or one of its ancestors, is (or was last) assigned to this agent."""
    t: object | None = task
    for _ in range(hops):
        if t is None:
            return False
        if getattr(t, "agent_id", "") == agent_id:
            return True
        parent = getattr(t, "parent_task_id", "")
        if not parent:
            return False
        t = lookup(parent)
    return False


def list_owner(ident: Identity, rpc_name: str) -> str | None:
    """The owner filter of a listing RPC: None (everything) for an admin, else the caller."""
    return None if rpc_scope(ident, rpc_name) == ALL else owner_of(ident)


# ---------------------------------------------------------------------------- the tables as text
def rpc_table_markdown() -> str:
    """The RPC table as docs/security.md shows it (a test keeps the two equal)."""
    lines = ["| RPC | " + " | ".join(PRINCIPALS) + " |", "| --- |" + " --- |" * len(PRINCIPALS)]
    for name, row in RPC_TABLE.items():
        lines.append(f"| {name} | " + " | ".join(row[p] for p in PRINCIPALS) + " |")
    return "\n".join(lines)
