"""The agent types the daemon's agents directories declare (docs/agents.md), made routable.

At start the directories are loaded (an invalid file stops the start, naming file and key);
the declared names join the built-in types, so the mesh accepts their tasks and the spawner
starts ``agentd --type NAME`` for them on demand. An agent that registers a declared type gets
its definition with REGISTERED (servicer_agents.py). `reload` (SIGHUP, `orchgpt agents reload`)
reads the directories again: a valid set replaces the old one (new agents get the new
definitions; agents already connected keep theirs until they reconnect, and idle local agents
of a changed type are stopped so that the next task starts one with it); an invalid set is
logged, naming file and key, and the old one is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs
from .agent_defs import AgentDefError, AgentDefinition, load_dirs

if TYPE_CHECKING:
    from .mesh import Mesh
    from .spawner import Spawner

log = logs.get("orchgpt.declared_types")


class DeclaredTypes:
    def __init__(self, dirs: list[Path], builtin: frozenset[str]) -> None:
        self.dirs = dirs
        self.builtin = builtin
        self.defs: dict[str, AgentDefinition] = {}
        self._json: dict[str, str] = {}
        self.on_change: list[Callable[[DeclaredTypes, set[str]], None]] = []

    def load(self) -> None:
        """Load at start: AgentDefError (naming every file and key at fault) when invalid."""
        self._set(load_dirs(self.dirs, reserved=self.builtin))
        log.info("agents_loaded", dirs=[str(d) for d in self.dirs], types=sorted(self.defs))

    def reload(self) -> bool:
        """Read the directories again; False (and the old definitions kept) when invalid."""
        try:
            defs = load_dirs(self.dirs, reserved=self.builtin)
        except AgentDefError as exc:
            log.error("agents_reload_failed", problems=exc.problems, kept=sorted(self.defs))
            return False
        changed = {n for n in set(defs) | set(self.defs) if defs.get(n) != self.defs.get(n)}
        self._set(defs)
        log.info("agents_reloaded", types=sorted(defs), changed=sorted(changed))
        for hook in self.on_change:
            try:
                hook(self, changed)
            except Exception as exc:  # keep the daemon up
                log.exception("agents_reload_hook_failed", error=str(exc))
        return True

    def _set(self, defs: dict[str, AgentDefinition]) -> None:
        self.defs = defs
        self._json = {n: d.to_json() for n, d in defs.items()}

    # ---- what the mesh asks
    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.defs)

    def routable(self) -> frozenset[str]:
        """Built-in and declared types: the mesh takes their tasks before an agent is there."""
        return self.builtin | self.names

    def spawnable(self) -> frozenset[str]:
        """What the spawner starts as ``agentd --type NAME`` (A2A fronts have their proxy)."""
        return self.builtin | frozenset(n for n, d in self.defs.items() if d.a2a is None)

    def definition_json(self, agent_type: str) -> str:
        return self._json.get(agent_type, "")

    def capabilities(self, agent_type: str) -> list[str]:
        d = self.defs.get(agent_type)
        return list(d.capabilities) if d is not None else []

    def listing(self) -> list[AgentDefinition]:
        return [self.defs[n] for n in sorted(self.defs)]


def attach(declared: DeclaredTypes, mesh: Mesh, spawner: Spawner | None) -> None:
    """Make the declared types routable (and spawnable), now and after every reload."""

    def apply(d: DeclaredTypes, changed: set[str]) -> None:
        mesh.builtin_types = d.routable()
        if spawner is not None:
            spawner.known_types = d.spawnable()
            for a in list(spawner.agents.values()):  # idle local agents of a changed type
                if a.agent_type in changed and a.registered and not a.stopping and spawner.is_idle(a.name):
                    spawner._stop(a, "its agent definition changed")
        for t in sorted(changed & d.names):
            mesh._dispatch(t)  # tasks that waited for a type declared just now

    apply(declared, set())
    declared.on_change.append(apply)
