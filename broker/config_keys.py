"""Centrifugo v5 keys Switchboard knows but does not implement yet (pure data, read by broker.config).

The keys that work are the fields of :class:`broker.config.Config` (top level) and of
:class:`broker.channel_options.ChannelOptions` (top level and per namespace); nothing here repeats them.
A Centrifugo user must never believe a feature is on when it is not, so

* a **switch** below set to anything but one of its "off" values stops the server at start (and makes
  ``checkconfig`` fail) with "<key> is not supported yet"; at its off value it is accepted, so that a
  config written for Centrifugo with the feature off loads unchanged;
* a **setting** of such a feature (an address, a timeout, a password) is accepted whatever its value:
  it has nothing to configure while its switch is off, and the switch cannot be on;
* any other key is reported as unknown (a warning naming it; the server still starts, as Centrifugo).

Implementing a feature moves its keys out of these tables into the option dataclasses.
"""

from __future__ import annotations

from typing import Any

OFF_FALSE: tuple[Any, ...] = (False,)
OFF_EMPTY: tuple[Any, ...] = ("",)
OFF_ZERO: tuple[Any, ...] = (0,)
OFF_EMPTY_LIST_OR_NULL: tuple[Any, ...] = ([], None)

# Top-level switches → the values that leave them off.
UNSUPPORTED_SWITCHES: dict[str, tuple[Any, ...]] = {
    "broker": ("", "memory", "redis"),
    "presence_manager": ("", "memory", "redis"),
    "redis_use_lists": OFF_FALSE,
    "redis_presence_hash_field_ttl": OFF_FALSE,
    "global_redis_presence_user_mapping": OFF_FALSE,
    "admin": OFF_FALSE,
    "prometheus": OFF_FALSE,
    "debug": OFF_FALSE,
    "swagger": OFF_FALSE,
    "opentelemetry": OFF_FALSE,
    "graphite": OFF_FALSE,
    "sockjs": OFF_FALSE,
    "uni_grpc": OFF_FALSE,
    "grpc_api": OFF_FALSE,
    "api_disable": OFF_FALSE,
    "tls": OFF_FALSE,
    "tls_autocert": OFF_FALSE,
    "internal_port": ("", 0),
    "log_file": OFF_EMPTY,
    "websocket_compression": OFF_FALSE,
    "user_personal_single_connection": OFF_FALSE,
    "client_connection_limit": OFF_ZERO,
    "client_connection_rate_limit": OFF_ZERO,
    "client_concurrency": OFF_ZERO,
    "token_jwks_public_endpoint": OFF_EMPTY,
    "subscription_token_jwks_public_endpoint": OFF_EMPTY,
    "proxy_subscribe_stream_endpoint": OFF_EMPTY,
    "rpc_ping": OFF_FALSE,
    "consumers": OFF_EMPTY_LIST_OR_NULL,
}

# Channel options (top level or in a namespace) that are fields of ChannelOptions, so that their
# names and types are checked, but whose feature does not exist yet.
UNSUPPORTED_CHANNEL_SWITCHES: dict[str, tuple[Any, ...]] = {
    "proxy_subscribe_stream": OFF_FALSE,
    "proxy_subscribe_stream_bidirectional": OFF_FALSE,
    "delta_publish": OFF_FALSE,
    "allowed_delta_types": (*OFF_EMPTY_LIST_OR_NULL, ()),
}

# Switch → the settings that only configure it.
SETTINGS_OF: dict[str, tuple[str, ...]] = {
    "admin": (
        "admin_password",
        "admin_secret",
        "admin_insecure",
        "admin_web_path",
        "admin_web_proxy_address",
        "admin_handler_prefix",
        "admin_external",
    ),
    "broker": ("nats_url", "nats_prefix", "nats_dial_timeout", "nats_write_timeout"),
    "prometheus": ("prometheus_handler_prefix",),
    "graphite": ("graphite_host", "graphite_port", "graphite_prefix", "graphite_interval", "graphite_tags"),
    "sockjs": ("sockjs_url", "sockjs_heartbeat_delay", "sockjs_handler_prefix"),
    "uni_grpc": (
        "uni_grpc_address",
        "uni_grpc_port",
        "uni_grpc_max_receive_message_size",
        "uni_grpc_tls",
        "uni_grpc_tls_cert",
        "uni_grpc_tls_key",
    ),
    "grpc_api": (
        "grpc_api_address",
        "grpc_api_port",
        "grpc_api_key",
        "grpc_api_reflection",
        "grpc_api_error_mode",
        "grpc_api_max_receive_message_size",
        "grpc_api_tls",
        "grpc_api_tls_cert",
        "grpc_api_tls_key",
    ),
    "tls": ("tls_cert", "tls_key", "tls_external"),
    "tls_autocert": (
        "tls_autocert_host_whitelist",
        "tls_autocert_cache_dir",
        "tls_autocert_email",
        "tls_autocert_http",
        "tls_autocert_http_addr",
    ),
    "internal_port": ("internal_address",),
    "websocket_compression": ("websocket_compression_level", "websocket_compression_min_size"),
    "rpc_ping": ("rpc_ping_method",),
    "proxy_subscribe_stream_endpoint": ("proxy_subscribe_stream_timeout",),
}

_GRPC_PROXY = "a gRPC proxy setting; proxy endpoints are http(s):// URLs (grpc:// is refused)"

# Keys with nothing to do here whatever their value, and why.
INERT_KEYS: dict[str, str] = {
    "usage_stats_disable": "no usage statistics are ever sent",
    "client_presence_update_interval": "presence is the live set of subscriptions, never refreshed",
    "websocket_read_buffer_size": "a Go buffer size",
    "websocket_write_buffer_size": "a Go buffer size",
    "websocket_use_write_buffer_pool": "a Go buffer pool",
    "redis_force_resp2": "the Redis client speaks RESP2 already",
    "proxy_grpc_metadata": _GRPC_PROXY,
    "proxy_grpc_cert_file": _GRPC_PROXY,
    "proxy_grpc_credentials_key": _GRPC_PROXY,
    "proxy_grpc_credentials_value": _GRPC_PROXY,
    "proxy_grpc_compression": _GRPC_PROXY,
}

# Top-level blocks of Centrifugo v6's nested config. Only the v4/v5 flat keys are read, so such a
# block is reported as ignored rather than as an unknown key or a type error.
V6_SECTIONS = frozenset(
    {
        "client",
        "channel",
        "rpc",
        "http_api",
        "grpc_api",
        "http_server",
        "node",
        "log",
        "engine",
        "broker",
        "presence_manager",
        "admin",
        "prometheus",
        "health",
        "debug",
        "swagger",
        "websocket",
        "sse",
        "http_stream",
        "uni_websocket",
        "uni_sse",
        "uni_http_stream",
        "uni_grpc",
        "emulation",
        "shutdown",
        "usage_stats",
        "opentelemetry",
        "graphite",
    }
)


def setting_keys() -> frozenset[str]:
    return frozenset(key for keys in SETTINGS_OF.values() for key in keys)
