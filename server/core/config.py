"""Settings: config.json (or CONFIG_FILE) first, then the docs/PROTOCOL.md env vars on top."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from server.core.errors import ConfigError

__all__ = [
    "Settings",
    "ServerSettings",
    "DockerSettings",
    "BindRoot",
    "MonitoringSettings",
    "FlowSettings",
    "JournalSettings",
    "ClusterSettings",
    "MessagingSettings",
    "PLACEMENT_CONSTRAINT",
    "SPREAD_DESCRIPTOR",
    "load_settings",
    "DEFAULT_CONFIG_FILE",
]

DEFAULT_CONFIG_FILE = Path(__file__).resolve().parents[2] / "config.json"
"""`config.json` beside the service (the checkout's root)."""

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ServerSettings(_Strict):
    """The HTTP/Socket.IO listener."""

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    """Allowed browser Origins besides the service's own; [] (the default) allows none, ["*"]
    allows any page on the web (warned about at start-up)."""
    token: str | None = None
    """ext: a Socket.IO connect must carry {"token": ...} in its auth payload. When neither this
    nor FLOWMGR_TOKEN is set, a token is generated on first start and kept in `token_file`."""
    token_file: str | None = None
    """ext: where the generated token is kept (0600, owned by the manager); default
    `<socket_dir>/.flowmgr-<instance>/.api-token`. `flowmgr --connect` reads it too."""
    max_connections: int = Field(default=200, ge=1, le=100_000)
    """ext: most client connections (HTTP and Socket.IO) open at once; one more is closed as
    soon as it is accepted. The descriptor budget keeps this many (plus 56) in its reserve."""
    idle_connection_timeout: float = Field(default=10.0, gt=0, le=3600)
    """ext: seconds a new connection may stay open before it has sent a request's headers."""
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    """ext: the largest inbound Socket.IO message; a larger one closes that client."""
    serve_in_panel: bool = False
    """ext: `flowmgr` (the panel) also serves this API in-process, as with `--serve`."""
    nice: int = Field(default=-10, ge=-20, le=19)
    """ext: the CPU priority the service asks for at start-up (Linux nice), so its answers are
    not queued behind the engine's own work when starts and stops keep every core busy;
    0 leaves the priority alone. Needs root or CAP_SYS_NICE, else a warning."""


class BindRoot(_Strict):
    """ext: one host directory flows may bind-mount from (or beneath)."""

    path: str = Field(pattern=r"^/")
    writable: bool = False
    """Whether a request may ask for a read-write mount beneath it."""


class DockerSettings(_Strict):
    """How managed containers are made."""

    default_image: str = "flow:latest"
    network: str = "kawaflow"
    """The network every managed container joins (created when missing)."""
    volume_driver: str = "local"
    instance: str = "default"
    """ext: the label value that scopes which containers this manager owns."""
    code_dir: str = "/app"
    """ext: where `update_container` copies new code inside the container."""
    socket_mount: str = "/run/flowmgr"
    """ext: where the container sees its own socket directory."""
    memory_limit: str = "512m"
    """ext: default memory limit of a managed container."""
    cpu_limit: float = Field(default=1.0, gt=0)
    """ext: default CPU limit, in cores."""
    pids_limit: int = Field(default=512, ge=16)
    """ext: default pids limit."""
    stop_timeout: int = Field(default=10, ge=0)
    """ext: seconds a stop waits for the flow before SIGKILL."""
    call_timeout: float = Field(default=60.0, gt=0)
    """ext: seconds any one Docker call may take."""
    cap_add: list[str] = Field(default_factory=list)
    """ext: Linux capabilities given back to flows (e.g. ["NET_BIND_SERVICE"]); the rest dropped."""
    read_only: bool = False
    """ext: read-only root filesystem for flows (tmpfs on /tmp); `update_container` then fails."""
    restart_policy: Literal["no", "on-failure", "always", "unless-stopped"] = "no"
    """ext: Docker restart policy of flows; "no" so one failure is reported as one crash."""
    restart_max_retries: int = Field(default=0, ge=0)
    """ext: retries for the "on-failure" restart policy (0 = unlimited, as Docker counts)."""
    allow_privileged_ports: bool = False
    """ext: allow publishing flow ports on host ports below 1024."""
    data_root: str = "/var/lib/docker"
    """ext: the engine's data root; flows may never mount it or anything beneath it."""
    forbidden_host_paths: list[str] = Field(default_factory=list)
    """ext: more host paths flows may never mount (added to the built-in list)."""
    bind_roots: list[BindRoot] = Field(default_factory=list)
    """ext: the only host directories whose contents a flow may bind-mount (`volumes`); empty
    (the default) allows no host path at all. Read-only unless the request asks for write
    and the root is `writable`."""
    data_mount: str | None = "/data"
    """ext: where each flow gets its own named volume (`flowmgr-data-<name>`, removed with the
    flow), so state needs no host path; null to give none."""
    code_roots: list[str] = Field(default_factory=list)
    """ext: the only host directories `update_container` may copy code from; empty (the
    default) refuses every `code_path`. Listing a root is the operator's promise that all
    beneath it may be given to flows (the manager still copies only what its own user could read
    without privilege). Checked at start: absolute real paths of directories, not holding or
    beneath the socket dir, system paths, the engine's data, the config or the token file."""
    max_code_bytes: int = Field(default=64 * 2**20, ge=1024)
    """ext: the largest code tree `update_container` copies (sum of file sizes)."""
    max_code_files: int = Field(default=10_000, ge=1)
    """ext: the most entries (files, directories, links) one update copies."""
    max_flows: int = Field(default=1000, ge=1)
    """ext: the most flows (managed containers) this manager creates (issue 15 sized the
    manager for a thousand: ~6 descriptors and ~14 us of CPU a second each)."""
    max_log_bytes: int = Field(default=1 * 2**20, ge=1024)
    """ext: the most bytes of output one `get_container_logs` answer carries (newest kept)."""
    log_max_size: str = Field(default="10m", pattern=r"^[0-9]{1,9}[kmg]$")
    """ext: Docker json-file log rotation of flows: size of one log file."""
    log_max_files: int = Field(default=3, ge=1, le=100)
    """ext: Docker json-file log rotation of flows: files kept."""


class MonitoringSettings(_Strict):
    """Background watching."""

    health_check_interval: float = Field(default=30, gt=0)
    """Seconds between `container_status_update` broadcasts."""
    resource_check_interval: float = Field(default=60, gt=0)
    """Seconds between two resource samples of one flow when they come from the Docker stats
    API: the engine is remote, or the manager cannot see the flow's cgroup files (in a
    container run without `--pid=host` and `-v /sys/fs/cgroup:/sys/fs/cgroup:ro`; the log says
    so once). Flows whose files are visible are read every `stats_interval` instead.

    The fallback's cost is bounded, whatever the number of flows: calls are spread evenly over
    the interval (one every interval/n seconds, round-robin, the oldest sample first) with at
    most `stats_api_concurrency` in flight; each call waits for the engine's next collection
    tick (~1 s), so past about interval x concurrency flows the interval stretches instead of
    the calls multiplying (100 flows at the defaults: 1.7 calls/s). A flow's first sample is
    taken on demand, through the same budget."""
    stats_interval: float = Field(default=1.0, gt=0)
    """ext: seconds between cgroup resource samples of a flow someone watches (rows on the
    panel's screen, its detail view, an API client's `watch_stats`)."""
    background_stats_interval: float = Field(default=10.0, gt=0)
    """ext: seconds between cgroup resource samples of the other flows (rounded to a multiple
    of `stats_interval`; at or below it, every flow is sampled every `stats_interval`)."""
    stats_api_concurrency: int = Field(default=4, ge=1, le=64)
    """ext: the most Docker stats API calls in flight at once (see `resource_check_interval`)."""
    crash_log_lines: int = Field(default=50, ge=0)
    """ext: how many log lines a crash report carries."""


class FlowSettings(_Strict):
    """ext: the manager <-> flow socket channel."""

    max_frame_bytes: int = Field(default=1024 * 1024, ge=16)
    send_timeout: float = Field(default=5.0, gt=0)
    """Seconds a send may wait for a flow that does not read before socket_timeout_error."""
    message_activity_per_second: int = Field(default=20, ge=0)
    """Activity lines of one flow's messages per second, each way; the rest of the second's
    messages are counted into one line (they are all pushed as `message_received` all the
    same). 0: a line for every message."""


class JournalSettings(_Strict):
    """ext: the durable journal of pushed events (docs/PROTOCOL.md "Durability")."""

    enabled: bool = True
    """false: seqs are still assigned (in memory) and pushed, nothing is written, resume and
    history answer that the journal is off."""
    path: str = ""
    """The SQLite file; "" = `<state_dir>/.journal.sqlite3` (a dot: no flow name can be it, so
    no flow directory is ever made in its place)."""
    max_age_days: float = Field(default=7.0, gt=0)
    """Events older than this are deleted (in small chunks, in the background)."""
    max_bytes: int = Field(default=2**30, ge=1024 * 1024)
    """The oldest events are deleted while the database's live pages take more than this."""
    status_interval: float = Field(default=60.0, ge=0)
    """Seconds between two journalled `container_status_update` of one flow; the samples in
    between are pushed live without a seq."""
    queue_max_per_flow: int = Field(default=1000, ge=1)
    """The most undelivered queued messages (`send_message` with `queue`) one flow may have."""


_NODE_ATTRIBUTE = (
    r"node\.(?:id|hostname|role|platform\.os|platform\.arch"
    r"|labels\.[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
)
PLACEMENT_CONSTRAINT = re.compile(
    rf"{_NODE_ATTRIBUTE} ?(?:==|!=) ?[A-Za-z0-9][A-Za-z0-9_.-]{{0,254}}", re.ASCII
)
"""The placement constraints flowmgr accepts (`cluster.placement`): Swarm's grammar narrowed to
one node attribute, `==` or `!=`, and a plain value (letters, digits, '_', '.', '-'): no regex
characters, spaces inside the value, commas or second clauses. Match with `fullmatch`."""
SPREAD_DESCRIPTOR = re.compile(_NODE_ATTRIBUTE, re.ASCII)
"""The node attributes `cluster.spread` may name (Swarm's spread preference)."""
MAX_PLACEMENT = 32
"""Most constraints `cluster.placement` may hold."""


class ClusterSettings(_Strict):
    """ext: cluster mode on Docker Swarm (docs/CLUSTER.md, issue 16)."""

    mode: Literal["single", "swarm"] = "single"
    """"single": one host, no Swarm (as before); "swarm": flows are Swarm services (hub, agents)."""
    placement: list[str] = Field(default_factory=list, max_length=MAX_PLACEMENT)
    """Swarm placement constraints every flow gets, e.g. "node.labels.flows==true"; each must
    match PLACEMENT_CONSTRAINT."""
    spread: str | None = "node.id"
    """The placement preference flows are spread by (a node attribute); null: none."""
    fence_seconds: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a node cut off from the hub and the managers keeps its flows before its agent
    stops them (a flow never runs on two nodes for longer)."""
    agent_heartbeat: float = Field(default=1.0, gt=0, le=60)
    """Seconds between two heartbeats of an agent."""
    agent_timeout: float = Field(default=2.0, gt=0, le=600)
    """Seconds without a heartbeat after which the hub marks an agent's link down; more than
    `agent_heartbeat`."""
    hub_url: str | None = Field(
        default=None,
        pattern=r"^(?:https?|wss?)://[A-Za-z0-9.\-\[\]:]{1,262}(?:/[A-Za-z0-9._~/-]{0,512})?$",
    )
    """Where agents connect to the hub (http(s):// or ws(s)://host[:port][/path])."""
    agent_token_file: str | None = Field(default=None, pattern=r"^/[^\x00\n\r]{0,4095}$")
    """The agents' token (separate from the API token), an absolute path."""

    @field_validator("placement")
    @classmethod
    def _placement(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            if not PLACEMENT_CONSTRAINT.fullmatch(item):
                raise ValueError(
                    f"cluster.placement[{i}] {item[:80]!r} is not a constraint flowmgr accepts: "
                    "node.(id|hostname|role|platform.os|platform.arch|labels.<key>) == or != "
                    "a value of letters, digits, '_', '.' and '-'"
                )
        return value

    @field_validator("spread")
    @classmethod
    def _spread(cls, value: str | None) -> str | None:
        if value is not None and not SPREAD_DESCRIPTOR.fullmatch(value):
            raise ValueError(
                f"cluster.spread {value[:80]!r} is not a node attribute: "
                "node.(id|hostname|role|platform.os|platform.arch|labels.<key>), or null"
            )
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> ClusterSettings:
        if self.agent_timeout <= self.agent_heartbeat:
            raise ValueError(
                f"cluster.agent_timeout ({self.agent_timeout}) must be more than "
                f"cluster.agent_heartbeat ({self.agent_heartbeat})"
            )
        return self


class MessagingSettings(_Strict):
    """ext: the RabbitMQ command/event interface beside Socket.IO (docs/PROTOCOL.md "RabbitMQ")."""

    backend: Literal["socketio", "rabbitmq"] = "socketio"
    """"socketio": the Socket.IO API alone; "rabbitmq": the AMQP interface as well."""
    rabbitmq_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/", pattern=r"^amqps?://[^\s]{1,2000}$"
    )
    """The broker (amqp:// or amqps://); its password is never logged."""
    command_queue: str = Field(default="flow-manager.commands", pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    """The shared durable queue of commands (any manager takes a create from it); each manager
    also consumes `<command_queue>.<docker.instance>`, where commands for its flows are routed."""
    response_queue: str = Field(
        default="flow-manager.responses", pattern=r"^[A-Za-z0-9_.:-]{1,200}$"
    )
    """Where answers go when a command names no `reply_to`."""
    event_exchange: str = Field(default="flow-manager.events", pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    """The durable topic exchange events are published to (routing key `event.<name>`)."""
    prefetch: int = Field(default=32, ge=1, le=1000)
    """Commands one manager works on at once (unacknowledged deliveries)."""
    delivery_limit: int = Field(default=5, ge=1, le=100)
    """Deliveries of one command (a manager dying on it each time) before the broker
    dead-letters it to `<command_queue>.dead`."""
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    """The largest command body; a larger one is answered validation_error unread."""
    answer_keep_days: float = Field(default=7.0, gt=0)
    """How long answers are kept by correlation_id to answer a redelivered command again."""


class Settings(_Strict):
    """Everything configurable; see docs/PROTOCOL.md "Configuration"."""

    socket_dir: str = "/tmp/kawaflow/sockets"
    log_level: LogLevel = "INFO"
    server: ServerSettings = Field(default_factory=ServerSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    flow: FlowSettings = Field(default_factory=FlowSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)
    config_file: str | None = None
    """Where these settings were read from (set by `load_settings`; not a file key)."""

    @property
    def state_dir(self) -> str:
        """The manager's private directory (0700, its own): flows' socket directories, the
        stop-state file, the generated API token. No flow and no other user reaches it."""
        return os.path.join(self.socket_dir, f".flowmgr-{self.docker.instance}")

    @property
    def journal_path(self) -> str:
        """Where the journal's SQLite file is."""
        return self.journal.path or os.path.join(self.state_dir, ".journal.sqlite3")

    @property
    def answers_path(self) -> str:
        """Where the RabbitMQ interface keeps its answers by correlation_id."""
        return os.path.join(self.state_dir, ".answers.sqlite3")

    @property
    def token_path(self) -> str:
        """Where the generated API token is kept."""
        return self.server.token_file or os.path.join(self.state_dir, ".api-token")


_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "SOCKET_DIR": ("socket_dir",),
    "LOG_LEVEL": ("log_level",),
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "CORS_ORIGINS": ("server", "cors_origins"),
    "FLOWMGR_TOKEN": ("server", "token"),
    "JOURNAL_ENABLED": ("journal", "enabled"),
    "JOURNAL_PATH": ("journal", "path"),
    "MESSAGING_BACKEND": ("messaging", "backend"),
    "RABBITMQ_URL": ("messaging", "rabbitmq_url"),
    "FLOW_MANAGER_COMMAND_QUEUE": ("messaging", "command_queue"),
    "FLOW_MANAGER_RESPONSE_QUEUE": ("messaging", "response_queue"),
    "FLOW_MANAGER_EVENT_EXCHANGE": ("messaging", "event_exchange"),
}


def _env_value(name: str, raw: str) -> Any:
    if name == "PORT":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable PORT={raw!r} is not a port number", details={"field": "PORT"}
            ) from None
    if name == "CORS_ORIGINS":
        return [o.strip() for o in raw.split(",") if o.strip()]
    if name == "LOG_LEVEL":
        return raw.upper()
    if name == "JOURNAL_ENABLED":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(
            f"environment variable JOURNAL_ENABLED={raw!r} is not true or false",
            details={"field": "JOURNAL_ENABLED"},
        )
    return raw


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        else:
            lines.append(f"  '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the config file, apply env vars, then keyword overrides; raise ConfigError."""
    env = os.environ if env is None else env
    path = Path(config_file or env.get("CONFIG_FILE") or DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"cannot read configuration file {path}: {err}", details={"file": str(path)}
            ) from err
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"configuration file {path} must hold a JSON object", details={"file": str(path)}
            )
        data = loaded
    elif config_file is not None or "CONFIG_FILE" in env:
        raise ConfigError(f"configuration file {path} does not exist", details={"file": str(path)})
    if "config_file" in data:
        raise ConfigError(
            f"invalid configuration in {path}:\n  unknown key 'config_file'",
            details={"file": str(path), "field": "config_file"},
        )
    try:
        Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, str(path)), details={"file": str(path)}) from None
    for name, keys in _ENV_KEYS.items():
        if name in env and env[name] != "":
            _set_in(data, keys, _env_value(name, env[name]))
    for dotted, value in overrides.items():
        _set_in(data, tuple(dotted.split("__")), value)
    data["config_file"] = str(path) if path.exists() else None
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            _describe(err, f"{path} with environment overrides"), details={"file": str(path)}
        ) from None


def _set_in(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def load_cli_settings(config_file: str | None, host: str | None, port: int | None) -> Settings:
    """`load_settings` with the `--config/--host/--port` options both entry points share."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["server__host"] = host
    if port is not None:
        overrides["server__port"] = port
    return load_settings(config_file, **overrides)


def require_single_host(settings: Settings) -> None:
    """ConfigError unless `cluster.mode` is "single": a one-host manager never runs while the
    configuration asks for a cluster (two managers of the same flows)."""
    if settings.cluster.mode != "single":
        raise ConfigError(
            f"cluster.mode is {settings.cluster.mode!r}: this manager serves one host only; "
            "in cluster mode run `flowmgr --hub` on a manager node and `flowmgr --agent` on "
            "every node (docs/CLUSTER.md), and connect a panel with --connect, or set "
            'cluster.mode to "single"'
        )


def require_cluster(settings: Settings) -> None:
    """ConfigError unless `cluster.mode` is "swarm" (the hub and the agents)."""
    if settings.cluster.mode != "swarm":
        raise ConfigError(
            'flowmgr --hub and --agent run in cluster mode only: set cluster.mode to "swarm" '
            "(docs/CLUSTER.md)",
            details={"field": "cluster.mode"},
        )
