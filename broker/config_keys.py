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
    "admin_web_path": OFF_EMPTY,
    "admin_web_proxy_address": OFF_EMPTY,
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
}

# Switch → the settings that only configure it.
SETTINGS_OF: dict[str, tuple[str, ...]] = {
    "broker": ("nats_url", "nats_prefix", "nats_dial_timeout", "nats_write_timeout"),
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
    "admin_external": "there is no internal port: the admin page is on http_server.port",
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

# Where the keys above live in Centrifugo v6's nested config (keys v6 dropped, like sockjs, have none).
V6_PATHS: dict[str, str] = {
    "presence_manager": "presence_manager.type",
    "redis_use_lists": "engine.redis.history_use_lists",
    "redis_presence_hash_field_ttl": "engine.redis.presence_hash_field_ttl",
    "global_redis_presence_user_mapping": "engine.redis.presence_user_mapping",
    "admin_web_path": "admin.web_path",
    "admin_web_proxy_address": "admin.web_proxy_address",
    "admin_external": "admin.external",
    "debug": "debug.enabled",
    "swagger": "swagger.enabled",
    "opentelemetry": "opentelemetry.enabled",
    "graphite": "graphite.enabled",
    "uni_grpc": "uni_grpc.enabled",
    "grpc_api": "grpc_api.enabled",
    "api_disable": "http_api.disabled",
    "tls": "http_server.tls.enabled",
    "tls_autocert": "http_server.tls_autocert.enabled",
    "internal_port": "http_server.internal_port",
    "log_file": "log.file",
    "websocket_compression": "websocket.compression",
    "user_personal_single_connection": "client.subscribe_to_user_personal_channel.single_connection",
    "client_connection_limit": "client.connection_limit",
    "client_connection_rate_limit": "client.connection_rate_limit",
    "client_concurrency": "client.concurrency",
    "token_jwks_public_endpoint": "client.token.jwks_public_endpoint",
    "subscription_token_jwks_public_endpoint": "client.subscription_token.jwks_public_endpoint",
    "proxy_subscribe_stream_endpoint": "channel.proxy.subscribe_stream.endpoint",
    "rpc_ping": "rpc.ping.enabled",
    "consumers": "consumers",
    "usage_stats_disable": "usage_stats.disabled",
    "client_presence_update_interval": "client.presence_update_interval",
    "websocket_read_buffer_size": "websocket.read_buffer_size",
    "websocket_write_buffer_size": "websocket.write_buffer_size",
    "websocket_use_write_buffer_pool": "websocket.use_write_buffer_pool",
    "redis_force_resp2": "engine.redis.force_resp2",
}

# Switches that exist only in v6 (no v4/v5 key): refused when on, under their v6 path.
V6_ONLY_SWITCHES: dict[str, tuple[Any, ...]] = {
    "broker.enabled": OFF_FALSE,
    "presence_manager.enabled": OFF_FALSE,
    "client.insecure_skip_token_signature_verify": OFF_FALSE,
    "client.user_id_http_header": OFF_EMPTY,
    "client.token.hmac_previous_secret_key": OFF_EMPTY,
    "client.subscription_token.hmac_previous_secret_key": OFF_EMPTY,
    "client.connect_code_to_unidirectional_disconnect.enabled": OFF_FALSE,
    "uni_http_stream.connect_code_to_http_response.enabled": OFF_FALSE,
    "uni_sse.connect_code_to_http_response.enabled": OFF_FALSE,
    "uni_websocket.join_push_messages": OFF_FALSE,
    "uni_websocket.compression": OFF_FALSE,
    "http_server.http3.enabled": OFF_FALSE,
    "admin.oidc.enabled": OFF_FALSE,
    "http_server.internal_tls.enabled": OFF_FALSE,
    "webtransport.enabled": OFF_FALSE,
    "websocket.process_commands_off_read_loop": OFF_FALSE,
}

# v6 paths with nothing to do here whatever their value, and why.
V6_INERT: dict[str, str] = {
    "websocket.write_timeout": "writes never block; a client too slow to take them is cut (3008)",
    "websocket.decompressed_message_size_limit": "WebSocket compression is not offered",
    "websocket.compression_level": "WebSocket compression is not offered",
    "websocket.compression_min_size": "WebSocket compression is not offered",
    "node.info_metrics_aggregate_interval": "node counts are read live",
    "client.channel_position_check_delay": "positions are checked on every publication's offset",
    "client.channel_position_max_time_lag": "positions are checked on every publication's offset",
    "http_api.external": "there is no internal port: every endpoint is on http_server.port",
    "engine.redis.client_name": "a connection name shown by CLIENT LIST only",
    "usage_stats.disabled": "no usage statistics are ever sent",
}

# v6 sections belonging to a feature that is not supported yet: every key under them is a setting of
# that feature (accepted whatever its value) except its switch, which the tables above check.
V6_FEATURE_SECTIONS = (
    "admin.oidc.",
    "debug.",
    "swagger.",
    "opentelemetry.",
    "graphite.",
    "uni_grpc.",
    "grpc_api.",
    "broker.",
    "presence_manager.",
    "consumers",
    "rpc.ping.",
    "http_server.tls.",
    "http_server.tls_autocert.",
    "http_server.internal_tls.",
    "http_server.http3.",
    "webtransport.",
    "channel.proxy.subscribe_stream.",
    "channel.proxy.state.",
    "channel.proxy.cache_empty.",
    "client.connect_code_to_unidirectional_disconnect.",
    "uni_http_stream.connect_code_to_http_response.",
    "uni_sse.connect_code_to_http_response.",
)


def setting_keys() -> frozenset[str]:
    return frozenset(key for keys in SETTINGS_OF.values() for key in keys)
