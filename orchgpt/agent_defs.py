"""Agent types declared as data: one TOML file per type in an agents directory (docs/agents.md).

    # agents.d/reviewer.toml
    name = "reviewer"
    description = "Reviews code for bugs and clarity"
    system_prompt = "You are a meticulous code reviewer."
    model = "smart"
    tools = ["read_file"]

    defs = load_dir(Path("agents.d"))        # {name: AgentDefinition}; AgentDefError lists
                                             # every problem as "FILE: KEY: problem"

The daemon loads the files, routes and spawns the types like built-in ones, and sends the
validated definition (``to_json``) to every agent that registers such a type (REGISTERED), so
that an agent on another host runs it without a copy of the file. This module is shared by the
daemon and agentd and imports neither.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .mesh_registry import AGENT_TYPE_RE

# The documented registry of built-in tools a declared agent may list in ``tools``
# (agentd/tools.py and agentd/tools_agents.py implement them; a test keeps both equal).
TOOLS: dict[str, str] = {
    "read_file": "read a text file of the task's workspace",
    "write_file": "create or replace a file of the workspace",
    "list_files": "list the files of the workspace with their sizes",
    "run_command": "run a shell command (code, tests) in the workspace, inside the sandbox",
    "fetch_url": "fetch an http(s) URL (only when the agent allows it: ORCHGPT_ALLOW_FETCH)",
    "ask_agent": "give a sub-task to another agent type of the mesh and read its answer",
}
APPROVALS = ("never", "tools", "always")
MAX_FILE_BYTES = 256 * 1024
MCP_NAME = r"^[a-z][a-z0-9_]{0,23}$"


class AgentDefError(ConfigError):
    """One or more agent definitions are invalid; ``problems``: one "FILE: KEY: problem" each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class McpServer(BaseModel):
    """An MCP server whose tools the agent offers its model: a command started over stdio
    (with ``args``, ``env``), or a streamable-HTTP ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = ""
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    url: str = ""
    bearer_env: str = ""  # url only: an environment variable of the agent holding a bearer token
    tools: list[str] | None = None  # only these tools of the server (default: all of them)
    timeout: float = Field(30.0, gt=0, le=600)  # seconds to start, and per call

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.lower().startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if bool(self.command.strip()) == bool(self.url):
            raise ValueError("give either `command` (a stdio server) or `url` (streamable HTTP), not both")
        if self.bearer_env and not self.url:
            raise ValueError("bearer_env: only for a `url` server")
        return self


class A2aRemote(BaseModel):
    """The type fronts an external A2A agent (docs/a2a.md): the daemon runs its proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    ca_file: str = ""
    auth_env: str = ""  # an environment variable of the daemon holding a bearer token

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.lower().startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v


class AgentDefinition(BaseModel):
    """One declared agent type (every key of the TOML file; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    system_prompt: str = ""
    model: str = "smart"  # "smart", "fast" or a model name
    base_url: str = ""  # with a model name: the OpenAI-compatible server that has it
    tools: list[str] = Field(default_factory=list)
    mcp: dict[str, McpServer] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    max_steps: int = Field(12, ge=1, le=200)
    approval: Literal["never", "tools", "always"] = "never"
    temperature: float | None = Field(None, ge=0, le=2)
    a2a: A2aRemote | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not AGENT_TYPE_RE.match(v):
            raise ValueError(f"{v!r} is not an agent type: use 1-32 lowercase letters, digits, '-' or '_'")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty: use smart, fast or a model name")
        return v.strip()

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if v and not v.lower().startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[str]) -> list[str]:
        for t in v:
            if t not in TOOLS:
                raise ValueError(f"unknown tool {t!r}; the built-in tools are {', '.join(TOOLS)}")
        return list(dict.fromkeys(v))

    @field_validator("mcp")
    @classmethod
    def _mcp(cls, v: dict[str, McpServer]) -> dict[str, McpServer]:
        import re

        for name in v:
            if not re.match(MCP_NAME, name):
                raise ValueError(f"server name {name!r}: use 1-24 lowercase letters, digits or '_'")
        return v

    @model_validator(mode="after")
    def _what_it_runs(self) -> AgentDefinition:
        if self.a2a is not None and (self.tools or self.mcp):
            raise ValueError("a2a: the type runs on the external A2A agent; it takes no tools or mcp")
        if self.a2a is None and not self.system_prompt.strip():
            raise ValueError("system_prompt: required (the agent's role and goals)")
        if self.base_url and self.model in ("smart", "fast"):
            raise ValueError('base_url: give a model name with it (model = "NAME"), not smart or fast')
        return self

    # ---- transport
    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, text: str) -> AgentDefinition:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise AgentDefError(_problems("definition", exc)) from None


def _problems(where: str, exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        key = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            if len(e["loc"]) == 1:
                msg += f" (the keys are: {', '.join(AgentDefinition.model_fields)})"
        elif e["type"] == "missing":
            msg = "required"
        out.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    return out


def load_file(path: Path) -> AgentDefinition:
    """One definition; AgentDefError names the file, the key and the problem."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise AgentDefError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AgentDefError([f"{path}: not valid TOML: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentDefError([f"{path}: cannot be read: {exc}"]) from None
    try:
        return AgentDefinition.model_validate(data)
    except ValidationError as exc:
        raise AgentDefError(_problems(str(path), exc)) from None


def load_dirs(dirs: list[Path], reserved: frozenset[str] = frozenset()) -> dict[str, AgentDefinition]:
    """Every ``*.toml`` of the directories (missing ones are skipped), checked together: all
    problems at once. ``reserved``: names that may not be declared (the built-in types)."""
    problems: list[str] = []
    found: dict[str, tuple[Path, AgentDefinition]] = {}
    for d in dirs:
        if d.exists() and not d.is_dir():
            problems.append(f"{d}: not a directory")
            continue
        for path in sorted(d.glob("*.toml")) if d.is_dir() else []:
            try:
                ad = load_file(path)
            except AgentDefError as exc:
                problems += exc.problems
                continue
            if ad.name in reserved:
                problems.append(f"{path}: name: {ad.name!r} is a built-in agent type; choose another name")
            elif ad.name in found:
                problems.append(f"{path}: name: {ad.name!r} is declared already by {found[ad.name][0]}")
            else:
                found[ad.name] = (path, ad)
    if problems:
        raise AgentDefError(problems)
    return {name: ad for name, (_, ad) in found.items()}


def load_dir(d: Path, reserved: frozenset[str] = frozenset()) -> dict[str, AgentDefinition]:
    if not d.is_dir():
        raise AgentDefError([f"{d}: no such directory"])
    return load_dirs([d], reserved)


def default_dirs(agents_dir: Path | None, config_file: Path | None, data_dir: Path) -> list[Path]:
    """``--agents-dir`` alone when given; else agents.d/ beside the config file and in the data dir."""
    if agents_dir is not None:
        return [agents_dir]
    dirs = [config_file.parent / "agents.d"] if config_file is not None else []
    return [*dirs, data_dir / "agents.d"]
