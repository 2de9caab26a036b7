"""Agent types the CLI knows without asking the orchestrator, and their aliases.

The list mirrors ``agentd.agents.BUILTIN_TYPES`` (a test keeps them equal);
it is copied here because importing agentd would import every agent and the
model client, which the CLI's start-up cannot afford. Types that remote agents
register, and the types declared in the daemon's agents directory, are learnt from the live
registry (``/agents``; ``Context.declared``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchgpt.models import AgentInfo

BUILTIN_TYPES: dict[str, str] = {
    "manager": "plans a project and delegates it to the other agents",
    "architect": "designs the system: documents and diagrams",
    "backend": "writes and tests server code",
    "frontend": "writes the user interface",
    "designer": "designs screens and assets",
    "git": "commits, branches and pushes the workspace",
    "optimizer": "reviews and speeds up code",
    "mailer": "sends e-mail reports",
    "echo": "replies with its input (for tests)",
    "workflow": 'runs a workflow of agents (/workflow run NAME "task")',
    "assistant": "answers with one model call (a workflow participant)",
    "user_proxy": "asks you and answers with what you say (a workflow participant)",
    "graph": "runs a graph of blocks (/graph run ID)",
    "blocks": "runs one graph block (a node of a graph run)",
}

ALIASES: dict[str, str] = {
    "man": "manager",
    "arch": "architect",
    "back": "backend",
    "front": "frontend",
    "design": "designer",
    "opt": "optimizer",
    "mail": "mailer",
}

ACTIONS: dict[str, str] = {
    "create": "start (or reuse) an agent of the type and give it the input",
    "run": "give a task to an agent of the type",
    "terminate": "stop the agents of the type",
    "status": "say what the agents of the type are doing",
}

# Actions that need an input.
INPUT_ACTIONS = frozenset({"create", "run"})

LANGUAGES: tuple[str, ...] = (
    "python",
    "typescript",
    "javascript",
    "go",
    "rust",
    "java",
    "kotlin",
    "c",
    "cpp",
    "csharp",
    "ruby",
    "php",
    "swift",
    "bash",
    "html",
    "sql",
)

DEFAULT_LANGUAGE = "python"


def resolve(name: str, known: Iterable[str] = ()) -> str | None:
    """The canonical agent type for `name` (case-insensitive, aliases), or None."""
    n = name.lower()
    if n in BUILTIN_TYPES:
        return n
    if n in ALIASES:
        return ALIASES[n]
    for k in known:
        if k.lower() == n:
            return k
    return None


def all_types(known: Iterable[str] = ()) -> list[str]:
    """Built-in types first, then the registry's other types, sorted."""
    extra = sorted({k for k in known if k.lower() not in BUILTIN_TYPES})
    return [*BUILTIN_TYPES, *extra]


def daemon_cell(agent: AgentInfo, here: str) -> str:
    """Where an agent of a cluster is connected (AgentInfo.daemon; docs/scaling.md): its
    daemon, marked when that daemon stopped answering (the agent is then LOST)."""
    if not agent.daemon:
        return "-"
    return f"{agent.daemon} (not answering)" if str(agent.state) == "lost" and agent.daemon != here else agent.daemon


def task_cell(agent: AgentInfo, short: Callable[[str], str]) -> str:
    """/agents' TASK: the task it runs; with slots, the first and how many more, and its slots."""
    more = len(agent.running_tasks) - 1
    cell = short(agent.current_task) or "-"
    if more > 0:
        cell += f" +{more}"
    if agent.max_concurrent_tasks > 1:
        cell += f" ({len(agent.running_tasks)}/{agent.max_concurrent_tasks})"
    return cell


def agent_table(found: list[AgentInfo], here: str) -> tuple[list[str], list[list[str]]]:
    """/agents' columns and rows; DAEMON when some agent is on another daemon than ``here``."""
    from .render import age, short_id

    elsewhere = any(a.daemon and a.daemon != here for a in found)
    rows = []
    for a in sorted(found, key=lambda a: (a.agent_type, a.agent_id)):
        row = [
            a.agent_type,
            a.agent_id,
            str(a.state),
            task_cell(a, short_id),
            "local" if a.local else (a.host or "remote"),
            age(a.last_heartbeat_ms),
        ]
        rows.append([*row, daemon_cell(a, here)] if elsewhere else row)
    heads = ["TYPE", "AGENT", "STATE", "TASK", "WHERE", "HEARTBEAT"]
    return ([*heads, "DAEMON"] if elsewhere else heads), rows
