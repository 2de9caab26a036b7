"""Settings of `orchgpt serve`: flags over environment (ORCHGPT_*) over a TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .tls import parse_address

DEFAULT_LISTEN = "127.0.0.1:8443"


def default_data_dir() -> Path:
    return platformdirs.user_data_path("orchgpt")


class Settings(BaseSettings):
    """Every setting of the daemon. `orchgpt serve --help` lists them with these descriptions."""

    model_config = SettingsConfigDict(env_prefix="ORCHGPT_", extra="forbid", validate_default=True)

    listen: str = Field(
        DEFAULT_LISTEN,
        description="address to listen on, HOST:PORT (port 0 picks a free port); also ORCHGPT_ADDRESS",
    )
    certs: Path = Field(Path("certs"), description="certificate directory (ca.pem, server.pem, ...)")
    data_dir: Path = Field(
        default_factory=default_data_dir, description="where the store, agent certificates and workspaces live"
    )
    store: str = Field(
        "",
        description="store URL: sqlite:///PATH or a path, postgresql://USER@HOST:PORT/DB, "
        "or 'memory:' (default: DATA_DIR/orchgpt.db)",
    )
    workspace_root: Path | None = Field(
        None, description="root of the per-task workspaces (default: DATA_DIR/workspaces)"
    )
    max_local_agents: int = Field(
        16, ge=0, description="most agentd processes orchgpt runs itself at once (live ones; idle ones make room)"
    )
    spawn_deadline: float = Field(
        30.0, gt=0, description="seconds a spawned agent has to register before it is killed as a failed start"
    )
    local_idle_timeout: float = Field(
        300.0, gt=0, description="seconds an idle spawned agent lives before it is stopped (its slot is given back)"
    )
    spawn: bool = Field(True, description="spawn local agents for built-in types on demand")
    cluster: bool = Field(
        False,
        description="one of several daemons sharing the PostgreSQL store "
        "(docs/scaling.md); needs --store postgresql://...",
    )
    cluster_message_ttl: float = Field(
        300.0,
        gt=0,
        description="cluster: seconds a message for an agent of another daemon waits for it to take it; "
        "then it is dropped and its sender gets an ERROR (UNAVAILABLE) naming the agent",
    )
    agent_types: str = Field(
        "",
        description="built-in agent types this host runs, comma-separated (default: what `agentd --list-types` prints)",
    )
    agents_dir: Path | None = Field(
        None,
        description="directory of declared agent types, one TOML file each (docs/agents.md; "
        "default: agents.d/ beside the config file and in the data dir)",
    )
    heartbeat_interval: float = Field(5.0, gt=0, description="seconds between an agent's heartbeats (protocol §5)")
    heartbeat_misses: int = Field(3, ge=1, description="missed heartbeats before an agent is marked lost")
    heartbeat_agents_per_interval: int = Field(
        500,
        ge=1,
        description="connected agents per heartbeat_interval: with more, every agent's interval grows in "
        "proportion (announced, and re-announced when the count doubles or halves; orchgpt/heartbeats.py)",
    )
    max_agent_concurrency: int = Field(
        64,
        ge=1,
        le=1024,
        description="most tasks one agent runs at once: an agent asking for more slots (agentd --concurrency) "
        "is granted this many (Registered.max_concurrent_tasks; docs/protocol.md)",
    )
    local_agent_concurrency: int = Field(
        1,
        ge=1,
        le=1024,
        description="tasks each agent orchgpt spawns runs at once (agentd --concurrency; at most "
        "max_agent_concurrency). 1: one at a time",
    )
    max_attempts: int = Field(3, ge=1, description="times a task is dispatched before it fails (agent lost, crash)")
    grace_period: float = Field(10.0, ge=0, description="seconds running tasks get to finish at shutdown")
    reconnect_grace: float = Field(
        15.0,
        ge=0,
        description="seconds a disconnected agent's task is held for it (after a network blip or "
        "a restart of orchgpt) before it is requeued",
    )
    artifact_store_max_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="total size of the artifacts agents upload (DATA_DIR/artifacts, deduplicated); "
        "an upload past it is refused with RESOURCE_EXHAUSTED (0: no limit)",
    )
    commit_window_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="group commit (SQLite, PostgreSQL without --cluster): the longest a write waits (ms) "
        "to share one commit with others; answers still wait for the commit (docs/operations.md); "
        "0: a commit per write",
    )
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest accepted message")
    max_pending_events: int = Field(
        10_000, ge=100, description="events buffered for a slow client before it is dropped"
    )
    max_stream_queue_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes queued for one stream; a peer that does not read past it is disconnected "
        "(RESOURCE_EXHAUSTED)",
    )
    agent_messages_per_second: float = Field(
        5000.0,
        ge=0,
        description="envelopes per second one agent may send (0: no limit); beyond it ERROR "
        "RESOURCE_EXHAUSTED and the envelope is dropped",
    )
    agent_message_burst: int = Field(10_000, ge=1, description="envelopes an agent may send at once above the rate")
    max_events_per_task: int = Field(
        5000, ge=0, description="events stored per task (0: no limit); further events are dropped, with a marker"
    )
    max_task_input_bytes: int = Field(
        3 * 1024 * 1024, ge=0, description="largest command.input of a task (Submit, DELEGATE_TASK; 0: no limit)"
    )
    list_page_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, description="bytes of one ListTasks page; longer lists continue with a page token"
    )
    list_field_bytes: int = Field(
        4096, ge=64, description="input/output text kept per task in list views (GetTask returns it whole)"
    )
    crl_poll_interval: float = Field(
        2.0, gt=0, description="seconds between checks of the revocation list (crl.pem in the certs dir)"
    )
    schedule_poll_interval: float = Field(
        30.0,
        gt=0,
        description="longest sleep of the scheduler between passes: how soon a schedule "
        "another daemon added to a shared store is seen (docs/schedules.md)",
    )
    a2a_listen: str = Field(
        "", description="HOST:PORT of the A2A JSON-RPC + SSE listener (HTTPS, mutual TLS; docs/a2a.md); empty: off"
    )
    a2a_grpc: bool = Field(False, description="serve A2A's gRPC A2AService (tenant = agent type) on the mesh port")
    a2a_push: Literal["off", "public", "any"] = Field(
        "off",
        description="A2A push notifications: off; public (webhooks on public addresses "
        "only); any (every http(s) URL: a trusted network)",
    )
    a2a_agents: dict[str, str] = Field(
        default_factory=dict,
        description="external A2A agents the daemon runs proxies for: "
        "agent type -> URL (TOML table [a2a_agents]; docs/a2a.md)",
    )
    a2a_agents_ca: str = Field("", description="CA file to verify the external A2A agents' TLS")
    a2a_agents_auth: dict[str, str] = Field(
        default_factory=dict,
        description="credentials of those agents: agent type -> the name of "
        "an environment variable of the daemon holding its token, sent as its card asks (TOML table "
        "[a2a_agents_auth]; the token is never in the settings, on a command line or in a log)",
    )
    a2a_agents_client_cert: dict[str, str] = Field(
        default_factory=dict,
        description="client certificates for those agents that ask for mutual "
        "TLS: agent type -> PEM file (TOML table [a2a_agents_client_cert]; its key in the same file "
        "or in [a2a_agents_client_key])",
    )
    a2a_agents_client_key: dict[str, str] = Field(
        default_factory=dict, description="agent type -> the key file of its client certificate"
    )
    a2a_public_host: str = Field("", description="host name the A2A agent cards give (default: localhost)")
    metrics_listen: str = Field(
        "",
        description="HOST:PORT of the Prometheus /metrics endpoint (plain HTTP, no auth; a bare "
        "PORT or :PORT means 127.0.0.1; docs/operations.md); empty: off",
    )
    otlp_endpoint: str = Field(
        "",
        description="OTLP/HTTP collector URL for OpenTelemetry traces (e.g. http://127.0.0.1:4318;"
        " also OTEL_EXPORTER_OTLP_ENDPOINT; docs/operations.md); empty: off unless that is set",
    )
    local_model: Literal["auto", "on", "off"] = Field(
        "auto", description="start the bundled local model when no OPENAI_API_KEY/OPENAI_BASE_URL is set (auto)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "console"] = Field("json", description="log line format")

    workflows_dir: Path | None = Field(
        None,
        description="workflow definitions, one TOML file each (default: workflows.d beside the config "
        "file when it exists, else DATA_DIR/workflows.d)",
    )

    config_file: Path | None = Field(None, exclude=True, description="TOML file with these settings")

    @field_validator("a2a_listen")
    @classmethod
    def _check_a2a_listen(cls, v: str) -> str:
        return cls._check_listen(v) if v else v  # empty: off

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(
                f"{v!r} is not an http(s) URL: give the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318"
            )
        return v

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, v: str) -> str:
        v = v.strip()
        if v.isdigit() or v.startswith(":"):  # loopback unless a host is given explicitly
            v = "127.0.0.1:" + v.lstrip(":")
        return cls._check_listen(v) if v else v  # empty: off

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        try:
            parse_address(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def store_url(self) -> str:
        return self.store or str(self.data_dir / "orchgpt.db")

    @property
    def workspaces(self) -> Path:
        return self.workspace_root or self.data_dir / "workspaces"


_toml_path: Path | None = None


def load_settings(flags: dict[str, Any] | None = None, config_file: str | Path | None = None) -> Settings:
    """Build the settings: ``flags`` (only those the user gave) over ORCHGPT_* over the TOML file."""
    global _toml_path
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = config_file or os.environ.get("ORCHGPT_CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            import tomllib

            tomllib.loads(p.read_text())
        except Exception as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        _toml_path = p
        flags.setdefault("config_file", p)
    else:
        _toml_path = None
    if "listen" not in flags and "ORCHGPT_LISTEN" not in os.environ and os.environ.get("ORCHGPT_ADDRESS"):
        flags["listen"] = os.environ["ORCHGPT_ADDRESS"]
    try:
        return Settings(**flags)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    finally:
        _toml_path = None


def describe_settings() -> list[tuple[str, str, str]]:
    """(name, env var, description with default) for --help."""
    rows = []
    for name, f in Settings.model_fields.items():
        if name == "config_file":
            continue
        default = (
            f.default
            if f.default_factory is None
            else "(" + ("platform data dir" if name == "data_dir" else "computed") + ")"
        )
        rows.append((name, f"ORCHGPT_{name.upper()}", f"{f.description} [default: {default}]"))
    return rows
