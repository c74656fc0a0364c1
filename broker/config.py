"""Configuration: Centrifugo v4/v5 flat keys, defaults, and the file < env < flags order.

A JSON file holds flat keys (``token_hmac_secret_key``, ``uni_http_stream``, ...). Environment variables
``SWITCHBOARD_<KEY>`` override the file; ``CENTRIFUGO_<KEY>`` is accepted as an alias so that existing
deployments keep working (``SWITCHBOARD_`` wins when both are set). Command-line flags override both.
Values from the environment are strings: booleans follow Go's ParseBool, lists are space separated (or
JSON), durations are Go duration strings or seconds.

The keys that work are this module's :class:`Config` fields and the channel options' fields
(:class:`broker.channel_options.ChannelOptions`, accepted at the top level and per namespace). Keys of
Centrifugo features not implemented yet (:mod:`broker.config_keys`) are refused when set to turn their
feature on; unknown keys are reported, never fatal.
"""

# Duration is an immutable float subclass, so calling it in dataclass defaults is safe.
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import orjson

from broker.channel_options import V6_ALIASES, option_names
from broker.config_keys import (
    INERT_KEYS,
    UNSUPPORTED_CHANNEL_SWITCHES,
    UNSUPPORTED_SWITCHES,
    V6_SECTIONS,
    setting_keys,
)
from broker.config_values import ConfigError as ConfigError  # re-exported: the config API raises it
from broker.config_values import Duration as Duration
from broker.config_values import format_duration as format_duration
from broker.config_values import parse_duration

ENV_PREFIX = "SWITCHBOARD_"
ENV_ALIAS_PREFIX = "CENTRIFUGO_"


# Per-channel options accepted at the top level (the "without namespace" options): every field of
# ChannelOptions, so that an option added there is a config key at once.
CHANNEL_OPTION_KEYS = option_names()


@dataclass(slots=True)
class Config:
    # Tokens.
    token_hmac_secret_key: str = ""
    token_rsa_public_key: str = ""
    token_ecdsa_public_key: str = ""
    token_audience: str = ""
    token_issuer: str = ""
    token_audience_regex: str = ""
    token_issuer_regex: str = ""
    token_user_id_claim: str = ""
    separate_subscription_token_config: bool = False
    subscription_token_hmac_secret_key: str = ""
    subscription_token_rsa_public_key: str = ""
    subscription_token_ecdsa_public_key: str = ""
    subscription_token_audience: str = ""
    subscription_token_issuer: str = ""
    subscription_token_audience_regex: str = ""
    subscription_token_issuer_regex: str = ""
    subscription_token_user_id_claim: str = ""

    # Server API.
    api_key: str = ""
    api_insecure: bool = False
    api_handler_prefix: str = "/api"
    api_error_mode: str = ""

    # Clients.
    allowed_origins: list[str] = field(default_factory=list)
    client_insecure: bool = False
    allow_anonymous_connect_without_token: bool = False
    disallow_anonymous_connection_tokens: bool = False
    client_user_connection_limit: int = 0
    client_channel_limit: int = 128
    client_queue_max_size: int = 1048576
    client_stale_close_delay: Duration = Duration(10)
    client_expired_close_delay: Duration = Duration(25)
    client_expired_sub_close_delay: Duration = Duration(25)
    client_history_max_publication_limit: int = 300
    client_recovery_max_publication_limit: int = 300
    client_connect_include_server_time: bool = False
    ping_interval: Duration = Duration(25)
    pong_timeout: Duration = Duration(8)
    user_subscribe_to_personal: bool = False
    user_personal_channel_namespace: str = ""

    # Channels.
    channel_max_length: int = 255
    channel_private_prefix: str = "$"
    channel_namespace_boundary: str = ":"
    channel_user_boundary: str = "#"
    channel_user_separator: str = ","
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    global_history_meta_ttl: Duration = Duration(720 * 3600)

    # Transports.
    websocket_disable: bool = False
    websocket_message_size_limit: int = 65536
    uni_websocket: bool = False
    uni_sse: bool = False
    uni_http_stream: bool = False
    uni_http_stream_max_request_body_size: int = 65536
    uni_sse_max_request_body_size: int = 65536
    websocket_handler_prefix: str = "/connection/websocket"
    uni_websocket_handler_prefix: str = "/connection/uni_websocket"
    # Bidirectional emulation for browsers without WebSocket: a stream down, /emulation up.
    http_stream: bool = False
    sse: bool = False
    http_stream_max_request_body_size: int = 65536
    sse_max_request_body_size: int = 65536
    emulation_max_request_body_size: int = 65536
    http_stream_handler_prefix: str = "/connection/http_stream"
    sse_handler_prefix: str = "/connection/sse"
    emulation_handler_prefix: str = "/emulation"
    uni_sse_handler_prefix: str = "/connection/uni_sse"
    uni_http_stream_handler_prefix: str = "/connection/uni_http_stream"

    # Server.
    port: int = 8000
    address: str = ""
    name: str = ""
    log_level: str = "info"
    health: bool = True
    shutdown_timeout: Duration = Duration(30)

    # Switchboard's own keys.
    shards: int = 0  # 0 = number of CPUs
    runtime_dir: str = ""  # default: <tmp>/switchboard-<port>
    api_shard_timeout: Duration = Duration(5)
    heartbeat_timeout: Duration = Duration(30)
    connections_expression_max_length: int = 4096
    # Estimated evaluation steps per connection a connections filter may cost (see broker/cel/cost.py);
    # also the runtime budget, in comprehension iterations per scanned connection.
    connections_expression_max_cost: int = 2000
    api_batch_max_size: int = 1000  # commands in one /api/batch, batch method or NDJSON /api body
    http_request_head_timeout: Duration = Duration(10)  # from accept / first byte to a complete head
    http_request_read_timeout: Duration = Duration(60)  # from the first byte to a complete body
    http_idle_timeout: Duration = Duration(60)  # keep-alive: between a response and the next request
    http_max_pending_connections: int = 10000  # open sockets not yet handed to a shard; 503 beyond
    shm_index: bool = True  # per-shard channel subscriber counts in shared memory, read by the router
    shm_index_capacity: int = 65536

    # Proxies to the application backend (the connect proxy: clients without a token).
    proxy_connect_endpoint: str = ""
    proxy_connect_timeout: Duration = Duration(1)
    proxy_connect_placement: str = "shard"  # who calls the connect proxy: "shard" or "router"
    proxy_http_headers: list[str] = field(default_factory=list)  # forwarded from the client's request
    proxy_emulated_headers: list[str] = field(default_factory=list)  # client-supplied, allowed to pass
    proxy_static_http_headers: dict[str, str] = field(default_factory=dict)
    proxy_binary_encoding: bool = False
    proxy_rpc_endpoint: str = ""  # a client's rpc command, answered by the backend
    proxy_rpc_timeout: Duration = Duration(1)
    proxy_refresh_endpoint: str = ""  # prolongs connections whose connect proxy answer expires
    proxy_refresh_timeout: Duration = Duration(1)
    proxy_subscribe_endpoint: str = ""  # namespaces with proxy_subscribe
    proxy_subscribe_timeout: Duration = Duration(1)
    proxy_publish_endpoint: str = ""  # namespaces with proxy_publish
    proxy_publish_timeout: Duration = Duration(1)
    proxy_sub_refresh_endpoint: str = ""  # namespaces with proxy_sub_refresh
    proxy_sub_refresh_timeout: Duration = Duration(1)
    proxy_include_connection_meta: bool = False  # the connection's meta in every proxy request but connect
    # Granular mode: named proxies, picked per event, per channel namespace and per RPC namespace.
    granular_proxy_mode: bool = False
    proxies: list[dict[str, Any]] = field(default_factory=list)
    connect_proxy_name: str = ""
    refresh_proxy_name: str = ""
    rpc_proxy_name: str = ""  # RPC methods outside any rpc_namespaces entry
    rpc_namespaces: list[dict[str, Any]] = field(default_factory=list)  # {name, rpc_proxy_name}
    rpc_namespace_boundary: str = ":"

    # Engine: "memory" keeps one node to itself; "redis" makes every node sharing the Redis one server.
    engine: str = "memory"
    node_name: str = ""  # the node's name in `info` and `unavailable_nodes`; `name` is its older spelling
    redis_address: list[str] = field(default_factory=lambda: ["127.0.0.1:6379"])
    redis_cluster_address: list[str] = field(default_factory=list)  # older spelling of redis+cluster://
    redis_sentinel_address: list[str] = field(default_factory=list)  # older spelling of redis+sentinel://
    redis_sentinel_master_name: str = ""
    redis_sentinel_password: str = ""
    redis_prefix: str = "switchboard"
    redis_user: str = ""
    redis_password: str = ""
    redis_db: int = 0
    redis_tls: bool = False
    redis_tls_skip_verify: bool = False
    redis_connect_timeout: Duration = Duration(1)
    redis_io_timeout: Duration = Duration(4)
    global_presence_ttl: Duration = Duration(60)  # a presence entry lives this long unless refreshed
    node_info_interval: Duration = Duration(3)  # how often a node tells the others it lives (3 missed: gone)
    api_node_timeout: Duration = Duration(3)  # how long an API call waits for the other nodes' answers

    # Top-level channel options (the "without namespace" channel options).
    channel_options: dict[str, Any] = field(default_factory=dict)

    # Keys seen in the file or environment that Switchboard does not know.
    unknown_keys: list[str] = field(default_factory=list)

    # Centrifugo v6 nested blocks seen at the top level ("client": {...}); not read.
    ignored_sections: list[str] = field(default_factory=list)

    @property
    def num_shards(self) -> int:
        return self.shards if self.shards > 0 else (os.cpu_count() or 1)

    @property
    def runtime_path(self) -> Path:
        if self.runtime_dir:
            return Path(self.runtime_dir)
        base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
        return Path(base) / f"switchboard-{self.port}"

    # Set by the supervisor for its children (not a key): the id every process of this node reports.
    node_uid: str = ""

    @property
    def node_id(self) -> str:
        """This node's id: the supervisor's, or (roles run one by one) its name, the same in each role."""
        return self.node_uid or self.node_display_name

    @property
    def node_display_name(self) -> str:
        if self.node_name or self.name:
            return self.node_name or self.name
        return f"{os.uname().nodename}_{self.port}"

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe dict that :func:`from_payload` turns back into the same config (child processes)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # orjson refuses float subclasses, and child processes receive the config as JSON.
            out[f.name] = float(value) if isinstance(value, Duration) else value
        return out


_FIELD_TYPES: dict[str, Any] = get_type_hints(Config)
# Fields that are not config keys themselves; every other field is one, picked up automatically.
_NOT_KEYS = frozenset({"channel_options", "unknown_keys", "ignored_sections", "node_uid"})
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Config)) - _NOT_KEYS
_ACCEPTED_UNUSED = setting_keys() | frozenset(INERT_KEYS)
_KNOWN_KEYS = _FIELD_NAMES | CHANNEL_OPTION_KEYS | frozenset(UNSUPPORTED_SWITCHES) | _ACCEPTED_UNUSED

# List keys that may also be one string (Centrifugo accepts both for Redis addresses).
_STRING_OR_LIST = frozenset({"redis_address", "redis_cluster_address", "redis_sentinel_address"})

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _coerce(key: str, value: Any, from_env: bool) -> Any:
    kind = _FIELD_TYPES[key]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if from_env and isinstance(value, str) and value in _TRUE | _FALSE:
                return value in _TRUE
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        if kind is int:
            if isinstance(value, bool):
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if from_env and isinstance(value, str):
                return int(value.strip())
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if kind is Duration:
            return parse_duration(value)
        if kind is str:
            if isinstance(value, str):
                return value
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if kind == list[str]:
            if key in _STRING_OR_LIST and isinstance(value, str) and not from_env:
                value = [value]
            if from_env and isinstance(value, str):
                text = value.strip()
                value = orjson.loads(text) if text.startswith("[") else text.split()
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        if kind == dict[str, str]:
            if from_env and isinstance(value, str):
                value = orjson.loads(value)
            if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                return {str(k): v for k, v in value.items()}
            raise ConfigError(f"{key}: expected an object of strings, got {value!r}")
        if kind == list[dict[str, Any]]:
            if from_env and isinstance(value, str):
                value = orjson.loads(value)
            if isinstance(value, list) and all(isinstance(v, dict) for v in value):
                return list(value)
            raise ConfigError(f"{key}: expected a list of objects, got {value!r}")
    except (ValueError, orjson.JSONDecodeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{key}: cannot parse {value!r}") from exc
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - every field type is handled above


def read_file(path: str | Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Values for known keys from the environment; SWITCHBOARD_ wins over the CENTRIFUGO_ alias."""
    out: dict[str, str] = {}
    for prefix in (ENV_ALIAS_PREFIX, ENV_PREFIX):
        for name, value in environ.items():
            if not name.startswith(prefix) or value == "":
                continue
            key = name[len(prefix) :].lower()
            if key in _KNOWN_KEYS:
                out[key] = value
    return out


def build(
    file_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge file < env < flags into a Config. Flags are already typed (None = not given).

    Raises ConfigError for a bad value, and for a feature that is not supported yet switched on.
    """
    cfg = Config()
    unknown: list[str] = []
    sections: list[str] = []
    switches: dict[str, Any] = {}  # final values of the not-supported-yet switches that were given
    for key, value in (file_values or {}).items():
        if key in V6_SECTIONS and isinstance(value, dict):
            sections.append(key)
        elif key in CHANNEL_OPTION_KEYS:
            cfg.channel_options[key] = value
        elif key in _FIELD_NAMES:
            setattr(cfg, key, _coerce(key, value, from_env=False))
        elif key in UNSUPPORTED_SWITCHES:
            switches[key] = value
        elif key not in _ACCEPTED_UNUSED:
            unknown.append(key)
    for key, value in env_values(environ if environ is not None else os.environ).items():
        if key in CHANNEL_OPTION_KEYS:
            cfg.channel_options[key] = _parse_env_scalar(value)
        elif key in _FIELD_NAMES:
            setattr(cfg, key, _coerce(key, value, from_env=True))
        elif key in UNSUPPORTED_SWITCHES:
            switches[key] = _parse_env_scalar(value)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key in _FIELD_NAMES:
            setattr(cfg, key, _coerce(key, value, from_env=isinstance(value, str)))
        elif key in UNSUPPORTED_SWITCHES:
            switches[key] = value
        else:
            raise ConfigError(f"unknown flag {key}")
    cfg.unknown_keys = sorted(unknown)
    cfg.ignored_sections = sorted(sections)
    for key, value in switches.items():
        _refuse_if_on(key, value, UNSUPPORTED_SWITCHES[key], "")
    validate(cfg)
    return cfg


def _refuse_if_on(key: str, value: Any, off: tuple[Any, ...], where: str) -> None:
    if value in off:
        return
    given = orjson.dumps(value, default=str).decode()
    off_value = orjson.dumps(off[0]).decode()
    raise ConfigError(
        f"{where}{key} is not supported yet ({key}: {given}; remove it or set it to {off_value})"
    )


def _parse_env_scalar(value: str) -> Any:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def load(
    path: str | Path | None, environ: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> Config:
    file_values = read_file(path) if path else {}
    return build(file_values, environ, flags)


def from_payload(payload: Mapping[str, Any]) -> Config:
    """Rebuild a Config sent to a child process (values are already typed)."""
    cfg = Config()
    for key, value in payload.items():
        if key in _FIELD_TYPES:
            if _FIELD_TYPES[key] is Duration:
                value = Duration(value)
            setattr(cfg, key, value)
    return cfg


def validate(cfg: Config) -> None:
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"port must be within 1..65535, got {cfg.port}")
    if cfg.shards < 0:
        raise ConfigError("shards must be 0 (number of CPUs) or more")
    if cfg.log_level.lower() not in {"trace", "debug", "info", "warn", "warning", "error", "none"}:
        raise ConfigError(f"unknown log_level {cfg.log_level!r}")
    if cfg.ping_interval <= 0:
        raise ConfigError("ping_interval must be positive")
    if cfg.api_error_mode not in {"", "transport"}:
        raise ConfigError(f"unknown api_error_mode {cfg.api_error_mode!r}")
    for key in ("http_request_head_timeout", "http_request_read_timeout", "http_idle_timeout"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive")
    if cfg.http_max_pending_connections <= 0 or cfg.api_batch_max_size <= 0:
        raise ConfigError("http_max_pending_connections and api_batch_max_size must be positive")
    _validate_engine(cfg)
    _validate_proxies(cfg)
    names: set[str] = set()
    for ns in cfg.namespaces:
        name = ns.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[-a-zA-Z0-9_.]{2,}", name):
            raise ConfigError(f"invalid namespace name {name!r}")
        if name in names:
            raise ConfigError(f"namespace name must be unique: {name!r}")
        names.add(name)
        _refuse_unsupported_channel_options(ns, f"namespace {name!r}: ")
    _refuse_unsupported_channel_options(cfg.channel_options, "")


def _refuse_unsupported_channel_options(values: Mapping[str, Any], where: str) -> None:
    for key, value in values.items():
        name = V6_ALIASES.get(key, key)
        off = UNSUPPORTED_CHANNEL_SWITCHES.get(name)
        if off is not None:
            _refuse_if_on(key, value, off, where)


ENGINES = ("memory", "redis")


def _validate_engine(cfg: Config) -> None:
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {cfg.engine!r}")
    for key in ("redis_connect_timeout", "redis_io_timeout", "node_info_interval", "api_node_timeout"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive")
    if cfg.global_presence_ttl <= 0:
        raise ConfigError("global_presence_ttl must be positive")
    if cfg.engine != "redis":
        return
    # Imported here: the address parser is only needed when Redis is the engine.
    from broker.engine.redis_address import RedisAddressError, redis_shards

    try:
        redis_shards(cfg)
    except RedisAddressError as exc:
        raise ConfigError(str(exc)) from None
    if not cfg.redis_prefix or "{" in cfg.redis_prefix or "}" in cfg.redis_prefix:
        raise ConfigError(f"redis_prefix must be non-empty and without braces, got {cfg.redis_prefix!r}")


def _validate_proxies(cfg: Config) -> None:
    if cfg.proxy_connect_placement not in ("router", "shard"):
        raise ConfigError(
            f"proxy_connect_placement must be router or shard, got {cfg.proxy_connect_placement!r}"
        )
    # Imported here: broker.proxy.table reads Config, and config must not import it at module level.
    from broker.proxy.table import ProxyConfigError, proxy_table

    try:
        proxy_table(cfg)
    except ProxyConfigError as exc:
        raise ConfigError(str(exc)) from None
