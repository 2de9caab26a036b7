"""The manager's plan: sub-tasks with agent types and dependencies, validated.

A plan comes from the model as JSON::

    {"tasks": [{"id": "arch", "agent": "architect", "task": "...", "depends_on": []}, ...]}

`parse_plan` checks it (known agent types, unique ids, dependencies that
exist, no cycle, a sane size) and returns the problems it found; `default_plan`
is what the manager falls back to when the model's plan is unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ._team import json_from_answer

MAX_TASKS = 12
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")

# What the planner is told about each type the manager may delegate to.
TEAM: dict[str, str] = {
    "architect": "architecture document (components, data model, endpoints) and a diagram",
    "designer": "design spec (palette, typography, layout, components) and SVG mock-ups of the UI",
    "backend": "the service's code with its tests, run until they pass; starts it and checks its routes",
    "frontend": "the web UI (HTML, CSS, JavaScript) wired to the backend's API",
    "optimizer": "refactors the backend into modules while its tests keep passing",
    "git": "commits every agent's output to a git repository of the project (runs last)",
    "mailer": "e-mails a summary of the results (only when the user asks for an e-mail)",
}


@dataclass
class PlanItem:
    id: str
    agent_type: str
    input: str
    depends_on: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent_type, "task": self.input, "depends_on": self.depends_on}


def default_plan(idea: str) -> list[PlanItem]:
    """architect -> (designer || backend) -> frontend -> git."""
    return [
        PlanItem("architect", "architect", f"Design the architecture of this project: {idea}"),
        PlanItem("designer", "designer", f"Design the user interface of this project: {idea}", ["architect"]),
        PlanItem("backend", "backend", f"Build the backend of this project, with its tests: {idea}", ["architect"]),
        PlanItem(
            "frontend",
            "frontend",
            f"Build the web frontend of this project, wired to the backend's API: {idea}",
            ["architect", "designer", "backend"],
        ),
        PlanItem("git", "git", f"Commit the project: {idea}", ["architect", "designer", "backend", "frontend"]),
    ]


def _str(d: dict[str, Any], *keys: str) -> str:
    for k in keys:
        v = d.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def _deps(d: dict[str, Any]) -> list[str] | None:
    for k in ("depends_on", "dependencies", "deps", "after", "needs"):
        if k in d:
            v = d[k]
            if v is None:
                return []
            if isinstance(v, str):
                return [v]
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return list(v)
            return None
    return []


def parse_plan(answer: str, allowed: set[str]) -> tuple[list[PlanItem], list[str]]:
    """(items, problems) of a model's plan; the plan is usable only when problems is empty."""
    try:
        raw = json_from_answer(answer)
    except ValueError:
        return [], ["the answer holds no JSON plan"]
    tasks = raw.get("tasks") if isinstance(raw, dict) else raw
    if not isinstance(tasks, list) or not tasks:
        return [], ['the plan has no "tasks" list']
    if len(tasks) > MAX_TASKS:
        return [], [f"the plan has {len(tasks)} sub-tasks; at most {MAX_TASKS}"]
    items: list[PlanItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    for n, t in enumerate(tasks, 1):
        if not isinstance(t, dict):
            problems.append(f"sub-task {n} is not an object")
            continue
        agent = _str(t, "agent", "agent_type", "type", "role").lower()
        ident = _str(t, "id", "name") or agent or f"task{n}"
        text = _str(t, "task", "input", "description", "instructions")
        deps = _deps(t)
        if agent not in allowed:
            problems.append(f"sub-task {ident!r}: unknown agent type {agent!r} (known: {', '.join(sorted(allowed))})")
        if not _ID_OK.match(ident):
            problems.append(f"sub-task {n}: invalid id {ident!r}")
        elif ident in seen:
            problems.append(f"sub-task id {ident!r} is used twice")
        if not text:
            problems.append(f"sub-task {ident!r} says nothing about what to do")
        if deps is None:
            problems.append(f"sub-task {ident!r}: depends_on must be a list of sub-task ids")
            deps = []
        seen.add(ident)
        items.append(PlanItem(ident, agent, text, deps))
    ids = {i.id for i in items}
    for i in items:
        for d in i.depends_on:
            if d == i.id:
                problems.append(f"sub-task {i.id!r} depends on itself")
            elif d not in ids:
                problems.append(f"sub-task {i.id!r} depends on {d!r}, which is not in the plan")
    if not problems:
        cycle = find_cycle(items)
        if cycle:
            problems.append("the dependencies form a cycle: " + " -> ".join(cycle))
    return items, problems


def find_cycle(items: list[PlanItem]) -> list[str]:
    """One dependency cycle (ids, first repeated at the end), or [] when there is none."""
    deps = {i.id: [d for d in i.depends_on] for i in items}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for d in deps.get(n, []):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in deps:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def normalise(items: list[PlanItem]) -> list[str]:
    """Adjust a valid plan: a git sub-task waits for every other (non-git) sub-task. Returns notes."""
    notes = []
    others = [i.id for i in items if i.agent_type not in ("git", "mailer")]
    for i in items:
        if i.agent_type in ("git", "mailer"):
            missing = [o for o in others if o not in i.depends_on]
            if missing:
                i.depends_on = [*i.depends_on, *missing]
                notes.append(f"{i.id} ({i.agent_type}) now also waits for {', '.join(missing)}")
    # a mailer reports on the commits too
    gits = [i.id for i in items if i.agent_type == "git"]
    for i in items:
        if i.agent_type == "mailer":
            i.depends_on += [g for g in gits if g not in i.depends_on]
    return notes


def topological(items: list[PlanItem]) -> list[PlanItem]:
    """Items in an order where each comes after its dependencies (stable otherwise)."""
    done: set[str] = set()
    out: list[PlanItem] = []
    pending = list(items)
    while pending:
        for i in pending:
            if all(d in done for d in i.depends_on):
                out.append(i)
                done.add(i.id)
                pending.remove(i)
                break
        else:  # a cycle: validated plans have none
            out += pending
            break
    return out
