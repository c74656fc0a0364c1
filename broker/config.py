"""Configuration: Centrifugo's v6 nested form and v4/v5 flat keys, one typed model, file < env < flags.

A config file (JSON, YAML or TOML, by extension) is written either in v6's nested form
(``{"client": {"token": {"hmac_secret_key": ...}}, "http_api": {"key": ...}}``) or in v4/v5's flat keys
(``{"token_hmac_secret_key": ..., "api_key": ...}``); :mod:`broker.config_v6` reads the former into the
latter, and a file mixing both is refused naming the keys. Environment variables
(:mod:`broker.config_env`) override the file, flags override both.

One model: :class:`Config` (server options) and :class:`broker.channel_options.ChannelOptions`
(channel options, at ``channel.without_namespace`` and per namespace). Each field is declared with
:func:`broker.config_values.opt` — its type, default, v6 path and description — and every value goes
through the one coercer, :func:`broker.config_values.coerce`. Docs, ``defaultconfig`` and
``defaultenv`` are generated from the same declarations (:mod:`broker.config_docs`). Keys of Centrifugo
features not implemented yet (:mod:`broker.config_keys`) are refused when set to turn their feature on;
unknown keys are reported, never fatal.
"""

# Duration is an immutable float subclass, so calling it in dataclass defaults is safe.
# ruff: noqa: RUF009

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import orjson

from broker.channel_options import CHANNEL_OPTION_TYPES, CHANNEL_V6_NAMES, V6_ALIASES, option_names
from broker.config_env import ITEM_LISTS, EnvSchema, apply_items, env_value, merge, read_env
from broker.config_keys import (
    INERT_KEYS,
    UNSUPPORTED_CHANNEL_SWITCHES,
    UNSUPPORTED_SWITCHES,
    V6_FEATURE_SECTIONS,
    V6_INERT,
    V6_ONLY_SWITCHES,
    V6_PATHS,
    setting_keys,
)
from broker.config_v6 import (
    CHANNEL_PROXY_KINDS,
    CONNECT_PROXY,
    PROXY_KEYS,
    REFRESH_PROXY,
    RPC_PROXY,
    Schema,
    flatten,
    generation,
)
from broker.config_values import ConfigError as ConfigError  # re-exported: the config API raises it
from broker.config_values import Duration as Duration
from broker.config_values import coerce, opt
from broker.config_values import format_duration as format_duration
from broker.config_values import parse_duration as parse_duration

# Per-channel options accepted at the top level (the "without namespace" options): every field of
# ChannelOptions, so that an option added there is a config key at once.
CHANNEL_OPTION_KEYS = option_names()


@dataclass(slots=True)
class Config:
    # Every option: its v4/v5 flat key (the field name), its v6 nested path, its description. The
    # README's option table, `defaultconfig` and `defaultenv` are generated from these declarations.

    # Tokens.
    token_hmac_secret_key: str = opt("", "client.token.hmac_secret_key", "HMAC secret of connection tokens")
    token_rsa_public_key: str = opt("", "client.token.rsa_public_key", "RSA public key (PEM) of tokens")
    token_ecdsa_public_key: str = opt("", "client.token.ecdsa_public_key", "ECDSA public key (PEM) of tokens")
    token_audience: str = opt("", "client.token.audience", "required aud claim")
    token_issuer: str = opt("", "client.token.issuer", "required iss claim")
    token_audience_regex: str = opt("", "client.token.audience_regex", "RE2 pattern the aud claim matches")
    token_issuer_regex: str = opt("", "client.token.issuer_regex", "RE2 pattern the iss claim matches")
    token_user_id_claim: str = opt("", "client.token.user_id_claim", "claim holding the user id (sub)")
    separate_subscription_token_config: bool = opt(
        False, "client.subscription_token.enabled", "verify subscription tokens with their own keys"
    )
    subscription_token_hmac_secret_key: str = opt(
        "", "client.subscription_token.hmac_secret_key", "HMAC secret of subscription tokens"
    )
    subscription_token_rsa_public_key: str = opt(
        "", "client.subscription_token.rsa_public_key", "RSA public key of subscription tokens"
    )
    subscription_token_ecdsa_public_key: str = opt(
        "", "client.subscription_token.ecdsa_public_key", "ECDSA public key of subscription tokens"
    )
    subscription_token_audience: str = opt("", "client.subscription_token.audience", "required aud")
    subscription_token_issuer: str = opt("", "client.subscription_token.issuer", "required iss")
    subscription_token_audience_regex: str = opt(
        "", "client.subscription_token.audience_regex", "RE2 pattern for aud"
    )
    subscription_token_issuer_regex: str = opt(
        "", "client.subscription_token.issuer_regex", "RE2 pattern for iss"
    )
    subscription_token_user_id_claim: str = opt(
        "", "client.subscription_token.user_id_claim", "claim holding the user id"
    )

    # Server API.
    api_key: str = opt("", "http_api.key", "key of the server HTTP API (X-API-Key)")
    api_insecure: bool = opt(False, "http_api.insecure", "serve the API without a key")
    api_handler_prefix: str = opt("/api", "http_api.handler_prefix", "path of the server API")
    api_error_mode: str = opt(
        "", "http_api.error_mode", 'errors as HTTP statuses: "transport"', choices=("", "transport")
    )

    # Clients.
    allowed_origins: list[str] = opt(
        v6="client.allowed_origins", doc="browser origins allowed to connect", factory=list
    )
    client_insecure: bool = opt(False, "client.insecure", "no token checks at all (development only)")
    allow_anonymous_connect_without_token: bool = opt(
        False, "client.allow_anonymous_connect_without_token", "connect without a token as anonymous"
    )
    disallow_anonymous_connection_tokens: bool = opt(
        False, "client.disallow_anonymous_connection_tokens", "refuse tokens with an empty sub"
    )
    client_user_connection_limit: int = opt(
        0, "client.user_connection_limit", "connections per user per node (0: no limit)", minimum=0
    )
    client_channel_limit: int = opt(128, "client.channel_limit", "subscriptions per connection", minimum=0)
    client_queue_max_size: int = opt(
        1048576, "client.queue_max_size", "bytes queued for a slow client before 3008", minimum=0
    )
    client_stale_close_delay: Duration = opt(
        Duration(10), "client.stale_close_delay", "close a connection that sent no connect"
    )
    client_expired_close_delay: Duration = opt(
        Duration(25), "client.expired_close_delay", "grace after a connection token expires"
    )
    client_expired_sub_close_delay: Duration = opt(
        Duration(25), "client.expired_sub_close_delay", "grace after a subscription token expires"
    )
    client_history_max_publication_limit: int = opt(
        300, "client.history_max_publication_limit", "publications one history call returns"
    )
    client_recovery_max_publication_limit: int = opt(
        300, "client.recovery_max_publication_limit", "publications one recovery returns"
    )
    client_connect_include_server_time: bool = opt(
        False, "client.connect_include_server_time", "server time in the connect reply"
    )
    ping_interval: Duration = opt(Duration(25), "client.ping_interval", "server ping period", positive=True)
    pong_timeout: Duration = opt(Duration(8), "client.pong_timeout", "wait for a pong before 3012")
    user_subscribe_to_personal: bool = opt(
        False, "client.subscribe_to_user_personal_channel.enabled", "subscribe users to #<user>"
    )
    user_personal_channel_namespace: str = opt(
        "", "client.subscribe_to_user_personal_channel.personal_channel_namespace", "its namespace"
    )

    # Channels.
    channel_max_length: int = opt(255, "channel.max_length", "longest channel name", positive=True)
    channel_private_prefix: str = opt("$", "channel.private_prefix", "prefix of private channels")
    channel_namespace_boundary: str = opt(":", "channel.namespace_boundary", "namespace separator")
    channel_user_boundary: str = opt("#", "channel.user_boundary", "user-limited channel marker")
    channel_user_separator: str = opt(",", "channel.user_separator", "separator of users in a channel")
    namespaces: list[dict[str, Any]] = opt(v6="channel.namespaces", doc="channel namespaces", factory=list)
    global_history_meta_ttl: Duration = opt(
        Duration(720 * 3600), "channel.history_meta_ttl", "how long stream positions are kept"
    )

    # Transports.
    websocket_disable: bool = opt(False, "websocket.disabled", "turn the WebSocket endpoint off")
    websocket_message_size_limit: int = opt(
        65536, "websocket.message_size_limit", "largest client frame", positive=True
    )
    uni_websocket: bool = opt(False, "uni_websocket.enabled", "unidirectional WebSocket")
    uni_sse: bool = opt(False, "uni_sse.enabled", "unidirectional Server-Sent Events")
    uni_http_stream: bool = opt(False, "uni_http_stream.enabled", "unidirectional HTTP streaming")
    uni_http_stream_max_request_body_size: int = opt(
        65536, "uni_http_stream.max_request_body_size", "largest connect body", positive=True
    )
    uni_sse_max_request_body_size: int = opt(
        65536, "uni_sse.max_request_body_size", "largest connect body", positive=True
    )
    websocket_handler_prefix: str = opt("/connection/websocket", "websocket.handler_prefix", "its path")
    uni_websocket_handler_prefix: str = opt(
        "/connection/uni_websocket", "uni_websocket.handler_prefix", "its path"
    )
    # Bidirectional emulation for browsers without WebSocket: a stream down, /emulation up.
    http_stream: bool = opt(False, "http_stream.enabled", "bidirectional HTTP-streaming emulation")
    sse: bool = opt(False, "sse.enabled", "bidirectional SSE emulation")
    http_stream_max_request_body_size: int = opt(
        65536, "http_stream.max_request_body_size", "largest connect body", positive=True
    )
    sse_max_request_body_size: int = opt(
        65536, "sse.max_request_body_size", "largest connect body", positive=True
    )
    emulation_max_request_body_size: int = opt(
        65536, "emulation.max_request_body_size", "largest /emulation body", positive=True
    )
    http_stream_handler_prefix: str = opt("/connection/http_stream", "http_stream.handler_prefix", "its path")
    sse_handler_prefix: str = opt("/connection/sse", "sse.handler_prefix", "its path")
    emulation_handler_prefix: str = opt("/emulation", "emulation.handler_prefix", "its path")
    uni_sse_handler_prefix: str = opt("/connection/uni_sse", "uni_sse.handler_prefix", "its path")
    uni_http_stream_handler_prefix: str = opt(
        "/connection/uni_http_stream", "uni_http_stream.handler_prefix", "its path"
    )

    # Server.
    port: int = opt(8000, "http_server.port", "HTTP port (clients and API)")
    address: str = opt("", "http_server.address", "address to listen on (empty: all)")
    log_level: str = opt(
        "info", "log.level", "trace, debug, info, warn, error or none",
        choices=("trace", "debug", "info", "warn", "warning", "error", "none"),
    )  # fmt: skip
    health: bool = opt(True, "health.enabled", "serve /health")

    # Observability and the admin web page.
    prometheus: bool = opt(False, "prometheus.enabled", "serve Prometheus metrics of the whole node")
    prometheus_handler_prefix: str = opt("/metrics", "prometheus.handler_prefix", "its path")
    admin: bool = opt(False, "admin.enabled", "serve the admin web page")
    admin_password: str = opt("", "admin.password", "password of the admin web page")
    admin_secret: str = opt("", "admin.secret", "key signing the admin page's session tokens")
    admin_insecure: bool = opt(False, "admin.insecure", "admin page without login (local use only)")
    admin_handler_prefix: str = opt("", "admin.handler_prefix", "path prefix of the admin page (empty: /)")
    shutdown_timeout: Duration = opt(Duration(30), "shutdown.timeout", "graceful stop deadline")

    # Switchboard's own keys (v6 paths in the section they belong to; documented as extensions).
    shards: int = opt(0, "node.shards", "shard processes (0: number of CPUs)", minimum=0, ext=True)
    runtime_dir: str = opt(
        "", "node.runtime_dir", "sockets and shared memory (default /tmp/switchboard-<port>)", ext=True
    )
    api_shard_timeout: Duration = opt(
        Duration(5), "http_api.shard_timeout", "how long the API waits for a shard", positive=True, ext=True
    )
    heartbeat_timeout: Duration = opt(
        Duration(30),
        "node.heartbeat_timeout",
        "a silent child is restarted after this",
        positive=True,
        ext=True,
    )
    connections_expression_max_length: int = opt(
        4096,
        "http_api.connections_expression_max_length",
        "longest connections CEL filter",
        positive=True,
        ext=True,
    )
    # Estimated evaluation steps per connection a connections filter may cost (see broker/cel/cost.py);
    # also the runtime budget, in comprehension iterations per scanned connection.
    connections_expression_max_cost: int = opt(
        2000,
        "http_api.connections_expression_max_cost",
        "cost bound of a connections filter",
        positive=True,
        ext=True,
    )
    api_batch_max_size: int = opt(
        1000, "http_api.batch_max_size", "commands in one batch request", positive=True, ext=True
    )
    http_request_head_timeout: Duration = opt(
        Duration(10),
        "http_server.request_head_timeout",
        "accept to a complete request head",
        positive=True,
        ext=True,
    )
    http_request_read_timeout: Duration = opt(
        Duration(60),
        "http_server.request_read_timeout",
        "first byte to a complete body",
        positive=True,
        ext=True,
    )
    http_idle_timeout: Duration = opt(
        Duration(60),
        "http_server.idle_timeout",
        "keep-alive wait for the next request",
        positive=True,
        ext=True,
    )
    http_max_pending_connections: int = opt(
        10000, "http_server.max_pending_connections", "sockets not yet handed to a shard (503 beyond)",
        positive=True, ext=True,
    )  # fmt: skip
    shm_index: bool = opt(
        True, "node.shm_index", "channel counts in shared memory, read by the router", ext=True
    )
    shm_index_capacity: int = opt(
        65536, "node.shm_index_capacity", "channels the shared index holds", ext=True
    )
    shm_user_index: bool = opt(
        True,
        "node.shm_user_index",
        "each shard's connections by user in shared memory: by-user answers without asking a shard",
        ext=True,
    )
    shm_user_index_capacity: int = opt(
        65536, "node.shm_user_index_capacity", "users per shard the index holds (half its slots)",
        positive=True, ext=True,
    )  # fmt: skip
    shm_user_index_heap: int = opt(
        64 * 1024 * 1024, "node.shm_user_index_heap",
        "bytes per shard for the users' encoded connections (pages used: ~1.5x what is live)",
        positive=True, ext=True,
    )  # fmt: skip

    # Proxies to the application backend. The flat (v4/v5) keys have no single v6 path: v6 configures
    # each proxy as an object (client.proxy.connect, channel.proxy.subscribe, rpc.proxy, proxies[]),
    # which broker.config_v6 turns into the granular form below.
    proxy_connect_endpoint: str = opt("", None, "connect proxy URL (clients without a token)")
    proxy_connect_timeout: Duration = opt(Duration(1), None, "connect proxy timeout")
    proxy_connect_placement: str = opt(
        "shard",
        "client.connect_proxy_placement",
        "who calls the connect proxy",
        choices=("shard", "router"),
        ext=True,
    )
    proxy_http_headers: list[str] = opt(v6=None, doc="request headers forwarded to proxies", factory=list)
    proxy_emulated_headers: list[str] = opt(v6=None, doc="client-supplied headers allowed", factory=list)
    proxy_static_http_headers: dict[str, str] = opt(v6=None, doc="headers added to proxy calls", factory=dict)
    proxy_binary_encoding: bool = opt(False, None, "payloads base64 in proxy calls")
    proxy_rpc_endpoint: str = opt("", None, "RPC proxy URL")
    proxy_rpc_timeout: Duration = opt(Duration(1), None, "RPC proxy timeout")
    proxy_refresh_endpoint: str = opt("", None, "refresh proxy URL")
    proxy_refresh_timeout: Duration = opt(Duration(1), None, "refresh proxy timeout")
    proxy_subscribe_endpoint: str = opt("", None, "subscribe proxy URL")
    proxy_subscribe_timeout: Duration = opt(Duration(1), None, "subscribe proxy timeout")
    proxy_publish_endpoint: str = opt("", None, "publish proxy URL")
    proxy_publish_timeout: Duration = opt(Duration(1), None, "publish proxy timeout")
    proxy_sub_refresh_endpoint: str = opt("", None, "sub_refresh proxy URL")
    proxy_sub_refresh_timeout: Duration = opt(Duration(1), None, "sub_refresh proxy timeout")
    proxy_include_connection_meta: bool = opt(False, None, "connection meta in proxy calls")
    # Granular mode: named proxies, picked per event, per channel namespace and per RPC namespace.
    granular_proxy_mode: bool = opt(False, None, "named proxies (proxies, *_proxy_name)")
    proxies: list[dict[str, Any]] = opt(v6=None, doc="named proxies", factory=list)
    connect_proxy_name: str = opt("", None, "named proxy for connect")
    refresh_proxy_name: str = opt("", None, "named proxy for refresh")
    rpc_proxy_name: str = opt("", None, "named proxy for RPC methods outside rpc_namespaces")
    rpc_namespaces: list[dict[str, Any]] = opt(
        v6=None, doc="RPC namespaces {name, rpc_proxy_name}", factory=list
    )
    rpc_namespace_boundary: str = opt(":", "rpc.namespace_boundary", "RPC namespace separator")

    # Engine: "memory" keeps one node to itself; "redis" makes every node sharing the Redis one server.
    engine: str = opt("memory", "engine.type", "memory or redis", choices=("memory", "redis"))
    node_name: str = opt("", "node.name", "the node's name (default <hostname>_<port>)")
    redis_address: list[str] = opt(
        v6="engine.redis.address", doc="Redis addresses (one per shard)",
        factory=lambda: ["127.0.0.1:6379"], string_or_list=True,
    )  # fmt: skip
    redis_cluster_address: list[str] = opt(
        v6="engine.redis.cluster_address", doc="Redis Cluster seeds", factory=list, string_or_list=True
    )
    redis_sentinel_address: list[str] = opt(
        v6="engine.redis.sentinel_address", doc="Sentinel addresses", factory=list, string_or_list=True
    )
    redis_sentinel_master_name: str = opt("", "engine.redis.sentinel_master_name", "Sentinel master")
    redis_sentinel_password: str = opt("", "engine.redis.sentinel_password", "Sentinel password")
    redis_prefix: str = opt("switchboard", "engine.redis.prefix", "prefix of every Redis key")
    redis_user: str = opt("", "engine.redis.user", "Redis ACL user")
    redis_password: str = opt("", "engine.redis.password", "Redis password")
    redis_db: int = opt(0, "engine.redis.db", "Redis database", minimum=0)
    redis_tls: bool = opt(False, "engine.redis.tls.enabled", "TLS to Redis")
    redis_tls_skip_verify: bool = opt(False, "engine.redis.tls.insecure_skip_verify", "skip its verification")
    redis_connect_timeout: Duration = opt(
        Duration(1), "engine.redis.connect_timeout", "Redis connect timeout", positive=True
    )
    redis_io_timeout: Duration = opt(
        Duration(4), "engine.redis.io_timeout", "Redis read/write timeout", positive=True
    )
    global_presence_ttl: Duration = opt(
        Duration(60), "engine.redis.presence_ttl", "presence entry lifetime unless refreshed", positive=True
    )
    node_info_interval: Duration = opt(
        Duration(3), "node.info_interval", "node heartbeat period (3 missed: gone)", positive=True, ext=True
    )
    api_node_timeout: Duration = opt(
        Duration(3), "http_api.node_timeout", "wait for the other nodes' answers", positive=True, ext=True
    )

    # Top-level channel options (the "without namespace" channel options).
    channel_options: dict[str, Any] = field(default_factory=dict)

    # Keys seen in the file or environment that Switchboard does not know.
    unknown_keys: list[str] = field(default_factory=list)

    # CENTRIFUGO_*/SWITCHBOARD_* variables that name nothing (reported as warnings).
    unknown_env: list[str] = field(default_factory=list)

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
        if self.node_name:
            return self.node_name
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
_NOT_KEYS = frozenset({"channel_options", "unknown_keys", "unknown_env", "node_uid"})
_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name not in _NOT_KEYS}
_FIELD_NAMES = frozenset(_FIELDS)
# v4/v5 spellings of a field under another name.
FLAT_ALIASES = {"name": "node_name"}
_ACCEPTED_UNUSED = setting_keys() | frozenset(INERT_KEYS)
_SWITCHES: dict[str, tuple[Any, ...]] = {**UNSUPPORTED_SWITCHES, **V6_ONLY_SWITCHES}
_KNOWN_KEYS = (
    _FIELD_NAMES
    | CHANNEL_OPTION_KEYS
    | frozenset(UNSUPPORTED_SWITCHES)
    | _ACCEPTED_UNUSED
    | frozenset(FLAT_ALIASES)
)


def _schema() -> Schema:
    paths: dict[str, str] = {f.metadata["v6"]: name for name, f in _FIELDS.items() if f.metadata["v6"]}
    paths.update({path: key for key, path in V6_PATHS.items()})
    paths.update({path: path for path in V6_ONLY_SWITCHES})
    channel = {v6: name for v6, name in CHANNEL_V6_NAMES.items()}
    return Schema(paths, channel, V6_FEATURE_SECTIONS, frozenset(V6_INERT))


SCHEMA = _schema()


def _env_schema() -> EnvSchema:
    kinds = {**_FIELD_TYPES, **CHANNEL_OPTION_TYPES}
    flat: dict[str, Any] = {key: kinds.get(FLAT_ALIASES.get(key, key), Any) for key in _KNOWN_KEYS}
    nested: dict[str, Any] = {path: kinds.get(key, Any) for path, key in SCHEMA.paths.items()}
    for v6, name in CHANNEL_V6_NAMES.items():
        nested[f"channel.without_namespace.{v6}"] = CHANNEL_OPTION_TYPES[name]
    for proxy in (
        CONNECT_PROXY,
        REFRESH_PROXY,
        RPC_PROXY,
        *(f"channel.proxy.{k}" for k in CHANNEL_PROXY_KINDS),
    ):
        for key, kind in PROXY_KEYS.items():
            nested[f"{proxy}.{key}"] = kind
    nested[f"{CONNECT_PROXY}.enabled"] = nested[f"{REFRESH_PROXY}.enabled"] = bool
    nested["rpc.without_namespace.proxy_enabled"] = bool
    nested["rpc.without_namespace.proxy_name"] = str
    for path in ("channel.namespaces", "rpc.namespaces", "proxies"):
        nested[path] = list[dict[str, Any]]
    namespace_keys = {v6: CHANNEL_OPTION_TYPES[name] for v6, name in CHANNEL_V6_NAMES.items()}
    namespace_keys.update(CHANNEL_OPTION_TYPES)
    items = {
        "channel.namespaces": namespace_keys,
        "rpc.namespaces": {"proxy_enabled": bool, "proxy_name": str},
        "proxies": {"name": str, **PROXY_KEYS},
    }
    return EnvSchema(flat, nested, items)


ENV_SCHEMA = _env_schema()


def read_file(path: str | Path) -> dict[str, Any]:
    """A config file by its extension: JSON (also for any other name), YAML (.yaml, .yml), TOML (.toml)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    kind = path.suffix.lower()
    # Imported here: only a YAML or TOML file needs its parser, and every shard process imports this module.
    import tomllib

    import yaml

    try:
        if not raw.strip():
            data: Any = {}
        elif kind in (".yaml", ".yml"):
            data = yaml.safe_load(raw) or {}
        elif kind == ".toml":
            data = tomllib.loads(raw.decode())
        else:
            data = orjson.loads(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        what = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}.get(kind, "JSON")
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid {what}: {detail}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold an object (a mapping of keys)")
    return data


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The flat keys the environment sets (typed), under either generation's names."""
    reading = read_env(environ, ENV_SCHEMA)
    return {**flatten(reading.nested, SCHEMA)[0], **reading.flat}


def build(
    file_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge file < env < flags into a Config. Flags are typed values or strings (None = not given),
    named by their v4/v5 key or their v6 path.

    Raises ConfigError for a bad value, for a file mixing v6 blocks with v4/v5 keys, and for a feature
    that is not supported yet switched on.
    """
    doc = copy.deepcopy(dict(file_values or {}))
    env = read_env(environ if environ is not None else os.environ, ENV_SCHEMA)
    unknown_env = list(env.unknown)
    if generation(doc, _KNOWN_KEYS) == "v6":
        nested = merge(doc, env.nested)
        unknown_env += apply_items({path: _lookup(nested, path) for path in ITEM_LISTS}, env)
        flat, unknown = flatten(nested, SCHEMA)
    else:
        flat, unknown = doc, [key for key in doc if key not in _KNOWN_KEYS]
        from_env, unknown_env_paths = flatten(env.nested, SCHEMA)
        unknown += unknown_env_paths
        flat.update(from_env)
        unknown_env += apply_items({"channel.namespaces": flat.get("namespaces")}, env)
    flat.update(env.flat)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        name = SCHEMA.paths.get(key, key)
        if name not in _KNOWN_KEYS:
            raise ConfigError(f"unknown flag {key}")
        try:
            flat[name] = value if not isinstance(value, str) else _flag_value(name, value)
        except ConfigError as exc:
            raise ConfigError(f"flag --{key}: {exc}") from None
    cfg = _typed(flat, unknown)
    cfg.unknown_env = sorted(set(unknown_env))
    validate(cfg)
    return cfg


def _lookup(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _flag_value(name: str, text: str) -> Any:
    """A flag given as text (``--uni_http_stream.enabled=false``), read as an environment value."""
    return env_value(ENV_SCHEMA.flat[name], text)


def _typed(flat: Mapping[str, Any], unknown: list[str]) -> Config:
    cfg = Config()
    switches: dict[str, Any] = {}  # final values of the not-supported-yet switches that were given
    for key, value in flat.items():
        name = FLAT_ALIASES.get(key, key)
        if name in CHANNEL_OPTION_KEYS:
            cfg.channel_options[name] = value
        elif name in _FIELDS:
            setattr(cfg, name, coerce(_where(name), _FIELDS[name], _FIELD_TYPES[name], value))
        elif name in _SWITCHES:
            switches[name] = value
        elif name not in _ACCEPTED_UNUSED and name not in unknown:
            unknown.append(name)
    cfg.unknown_keys = sorted(unknown)
    for key, value in switches.items():
        _refuse_if_on(key, value, _SWITCHES[key], "")
    return cfg


def _where(name: str) -> str:
    v6 = _FIELDS[name].metadata["v6"]
    return f"{name} ({v6})" if v6 else name


def _refuse_if_on(key: str, value: Any, off: tuple[Any, ...], where: str) -> None:
    if value in off:
        return
    given = orjson.dumps(value, default=str).decode()
    off_value = orjson.dumps(off[0]).decode()
    raise ConfigError(
        f"{where}{key} is not supported yet ({key}: {given}; remove it or set it to {off_value})"
    )


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
    _validate_engine(cfg)
    _validate_proxies(cfg)
    _validate_web(cfg)
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


def _validate_web(cfg: Config) -> None:
    """The admin page and the metrics endpoint: where they are, and that the page cannot be entered
    without a password unless that is asked for."""
    if cfg.admin and not cfg.admin_insecure and not (cfg.admin_password and cfg.admin_secret):
        raise ConfigError("admin.password and admin.secret must be set when admin is enabled")
    for key in ("admin_handler_prefix", "prometheus_handler_prefix"):
        prefix = getattr(cfg, key)
        if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "?" in prefix):
            raise ConfigError(f"{key} must start with / and not end with /, got {prefix!r}")
    if not cfg.prometheus_handler_prefix:
        raise ConfigError("prometheus_handler_prefix must not be empty")


def _validate_engine(cfg: Config) -> None:
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
    # Imported here: broker.proxy.table reads Config, and config must not import it at module level.
    from broker.proxy.table import ProxyConfigError, proxy_table

    try:
        proxy_table(cfg)
    except ProxyConfigError as exc:
        raise ConfigError(str(exc)) from None
