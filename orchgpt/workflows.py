"""Workflow definitions: one TOML file per workflow in the workflows directory.

    # workflows.d/review.toml
    name = "review"
    type = "sequential"            # or "autonomous", "groupchat"
    agents = ["coder", "reviewer"]
    summary_method = "last"        # or "llm", "none"

Participants (``agents``) are agent types by name (built-in, or declared in the agents
directory), each a string or a table ``{name, type, description, system_prompt, options,
human_input_mode}`` (the table names a participant that runs as ``type``, e.g. two
``assistant`` participants with different prompts). ``user_proxy`` is the human. A group chat
has ``speaker_selection`` (``round_robin``, ``auto``: the model picks from the participants'
descriptions, ``manual``: the user picks), ``max_rounds`` and a ``termination`` phrase, and may
name in ``terminated_by`` the participants whose message ends the chat with it (default: any).

The daemon loads the directory (``--workflows-dir``, ``ORCHGPT_WORKFLOWS_DIR``; default
``workflows.d`` beside the config file, else in the data dir) and resolves a workflow's name
to its definition when a ``/workflow run`` is submitted; the definition travels to the
``workflow`` agent in the task (see agentd/agents/workflow.py). Errors name the file, the key
and the problem.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import logs
from .errors import ConfigError

log = logs.get("orchgpt.workflows")

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")
TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
USER_PROXY = "user_proxy"
HumanInputMode = Literal["always", "terminate", "never"]
MAX_PARTICIPANTS = 16
MAX_ROUNDS = 100
DEF_OPTION = "workflow_def"  # the task option that carries the resolved definition (JSON)
NAME_OPTION = "workflow"  # the option the user gives: the workflow's name


class WorkflowError(ConfigError):
    """A workflow file that cannot be used: the message names the file, the key and the problem."""


class Participant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: str = ""  # the agent type the turn is routed to (default: the name)
    description: str = ""
    system_prompt: str = ""
    human_input_mode: HumanInputMode | None = None  # user_proxy only (default: the workflow's)
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TYPE_RE.match(v):
            raise ValueError(f"{v!r} is not a participant name: lowercase letters, digits, '-', '_'")
        return v

    @model_validator(mode="after")
    def _type(self) -> Participant:
        self.type = self.type or self.name
        if not TYPE_RE.match(self.type):
            raise ValueError(f"type {self.type!r} is not an agent type name")
        if self.type == "workflow":
            raise ValueError("a workflow cannot take part in a workflow (type 'workflow')")
        return self

    @property
    def is_user(self) -> bool:
        return self.type == USER_PROXY


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["sequential", "autonomous", "groupchat"]
    agents: list[Participant] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    description: str = ""
    summary_method: Literal["last", "llm", "none"] = "last"
    summary_prompt: str = ""
    speaker_selection: Literal["round_robin", "auto", "manual"] = "round_robin"
    max_rounds: int = Field(10, ge=1, le=MAX_ROUNDS)
    termination: str = "TERMINATE"
    terminated_by: list[str] = Field(default_factory=list)  # who may end it (empty: anyone)
    human_input_mode: HumanInputMode = "always"
    turn_timeout: float = Field(1800.0, gt=0, le=86400)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a workflow name: lowercase letters, digits, '-', '_'")
        return v

    @field_validator("agents", mode="before")
    @classmethod
    def _agents(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [{"name": x} if isinstance(x, str) else x for x in v]

    @model_validator(mode="after")
    def _participants(self) -> Workflow:
        names = [p.name for p in self.participants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"agents: {', '.join(dup)} appear more than once (give a table with its own name to use a type twice)"
            )
        unknown = [n for n in self.terminated_by if n not in names]
        if unknown:
            raise ValueError(f"terminated_by: {', '.join(unknown)} not among the agents ({', '.join(names)})")
        if all(p.is_user for p in self.participants):
            raise ValueError("agents: a workflow needs at least one agent besides user_proxy")
        return self

    @property
    def participants(self) -> list[Participant]:
        return list(self.agents)

    def human_mode(self, p: Participant) -> str:
        return p.human_input_mode or self.human_input_mode

    def may_end(self, p: Participant) -> bool:
        """Whether ``p``'s message ends a group chat by carrying the termination phrase."""
        return bool(self.termination) and (not self.terminated_by or p.name in self.terminated_by)

    def agent_types(self) -> list[str]:
        return sorted({p.type for p in self.participants if not p.is_user})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Workflow:
        return cls.model_validate(json.loads(text))


def _problems(exc: ValidationError) -> str:
    out = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith(("function-after", "str")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(out)


def parse(text: str, source: str = "<text>") -> Workflow:
    """A workflow from TOML text; WorkflowError names ``source``, the key and the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(f"{source}: {_problems(exc)}") from None


def load_file(path: Path) -> Workflow:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{path}: cannot read it: {exc}") from None
    wf = parse(text, str(path))
    if wf.name != path.stem:
        raise WorkflowError(f"{path}: name: {wf.name!r} differs from the file name ({path.stem}.toml)")
    return wf


class WorkflowBook:
    """The workflows of a directory, loaded at once; files that fail are kept as errors."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.workflows: dict[str, Workflow] = {}
        self.paths: dict[str, Path] = {}
        self.errors: list[str] = []
        self._seen: tuple[tuple[str, int, int], ...] = ()
        self.reload()

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        d = self.directory
        if d is None or not d.is_dir():
            return ()
        out = []
        for f in sorted(d.glob("*.toml")):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((f.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self) -> bool:
        """Reload when a file was added, changed or removed since the last load (a few stats);
        True when it reloaded."""
        if self._signature() == self._seen:
            return False
        self.reload()
        for e in self.errors:
            log.error("workflow_invalid", problem=e)
        log.info("workflows_reloaded", directory=str(self.directory), workflows=self.names())
        return True

    def reload(self) -> None:
        found: dict[str, Workflow] = {}
        paths: dict[str, Path] = {}
        errors: list[str] = []
        d = self.directory
        self._seen = self._signature()
        if d is not None and d.is_dir():
            for f in sorted(d.glob("*.toml")):
                try:
                    wf = load_file(f)
                except WorkflowError as exc:
                    errors.append(str(exc))
                    continue
                found[wf.name], paths[wf.name] = wf, f
        self.workflows, self.paths, self.errors = found, paths, errors

    def get(self, name: str) -> Workflow | None:
        return self.workflows.get(name)

    def names(self) -> list[str]:
        return sorted(self.workflows)


def default_dir(data_dir: Path, config_file: Path | None) -> Path:
    """``workflows.d`` beside the config file when there is one and it holds that directory,
    else in the data dir."""
    if config_file is not None:
        beside = Path(config_file).parent / "workflows.d"
        if beside.is_dir():
            return beside
    return Path(data_dir) / "workflows.d"


def load_workflows(settings: Any) -> WorkflowBook:
    """The daemon's workflows (orchgpt.config.Settings: workflows_dir, data_dir, config_file);
    each file that fails is logged with its problem and left out."""
    d = settings.workflows_dir or default_dir(settings.data_dir, settings.config_file)
    book = WorkflowBook(Path(d))
    for e in book.errors:
        log.error("workflow_invalid", problem=e)
    log.info("workflows_loaded", directory=str(d), workflows=book.names())
    return book
