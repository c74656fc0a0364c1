"""Environment variables of both generations, our prefix, per-item overrides and unknown names."""

from __future__ import annotations

from typing import Any

import pytest

from broker.config import ENV_SCHEMA, SCHEMA, ConfigError, build
from broker.config_env import name_for_env
from broker.proxy.table import proxy_table

URL = "http://127.0.0.1:3000"


def test_v6_variables_alone_configure_the_server() -> None:
    cfg = build(
        {},
        {
            "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": "secret",
            "CENTRIFUGO_HTTP_API_KEY": "api",
            "CENTRIFUGO_UNI_HTTP_STREAM_ENABLED": "true",
            "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_PRESENCE": "true",
            "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_HISTORY_TTL": "300s",
            "CENTRIFUGO_CLIENT_ALLOWED_ORIGINS": "https://a https://b",
            "CENTRIFUGO_HTTP_SERVER_PORT": "9100",
            "CENTRIFUGO_CLIENT_PING_INTERVAL": "1m30s",
            "CENTRIFUGO_ENGINE_REDIS_ADDRESS": "redis://127.0.0.1:6390 redis://127.0.0.1:6391",
        },
        {},
    )
    assert (cfg.token_hmac_secret_key, cfg.api_key, cfg.uni_http_stream) == ("secret", "api", True)
    assert cfg.channel_options == {"presence": True, "history_ttl": "300s"}
    assert cfg.allowed_origins == ["https://a", "https://b"]
    assert (cfg.port, cfg.ping_interval) == (9100, 90)
    assert cfg.redis_address == ["redis://127.0.0.1:6390", "redis://127.0.0.1:6391"]
    assert cfg.unknown_env == [] and cfg.unknown_keys == []


def test_switchboard_prefix_takes_the_same_names_and_wins() -> None:
    env = {"CENTRIFUGO_HTTP_API_KEY": "theirs", "SWITCHBOARD_HTTP_API_KEY": "ours"}
    assert build({}, env, {}).api_key == "ours"
    assert build({}, {"SWITCHBOARD_UNI_HTTP_STREAM_ENABLED": "1"}, {}).uni_http_stream is True


def test_v5_names_keep_working_next_to_v6_ones() -> None:
    cfg = build({}, {"CENTRIFUGO_UNI_HTTP_STREAM": "1", "CENTRIFUGO_TOKEN_HMAC_SECRET_KEY": "k"}, {})
    assert cfg.uni_http_stream is True and cfg.token_hmac_secret_key == "k"


def test_precedence_flags_over_env_over_file_and_empty_is_unset() -> None:
    file = {"http_server": {"port": 9001, "address": "127.0.0.1"}, "log": {"level": "warn"}}
    env = {"CENTRIFUGO_HTTP_SERVER_PORT": "9002", "CENTRIFUGO_LOG_LEVEL": "", "CENTRIFUGO_HTTP_API_KEY": "e"}
    cfg = build(file, env, {"http_server.port": "9003", "log.level": None})
    assert (cfg.port, cfg.address, cfg.log_level, cfg.api_key) == (9003, "127.0.0.1", "warn", "e")
    assert build(file, env, {}).port == 9002


def test_env_over_a_v5_file_and_v5_env_over_a_v6_file() -> None:
    assert build({"api_key": "file"}, {"CENTRIFUGO_HTTP_API_KEY": "env"}, {}).api_key == "env"
    assert build({"http_api": {"key": "file"}}, {"CENTRIFUGO_API_KEY": "env"}, {}).api_key == "env"


def test_namespaces_json_and_per_namespace_overrides() -> None:
    env = {
        "CENTRIFUGO_CHANNEL_NAMESPACES": '[{"name": "chat"}, {"name": "news-feed.v2", "history_size": 5}]',
        "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE": "true",
        "CENTRIFUGO_CHANNEL_NAMESPACES_NEWS_FEED_V2_HISTORY_TTL": "60s",
        "CENTRIFUGO_CHANNEL_NAMESPACES_GHOST_PRESENCE": "true",
    }
    cfg = build({}, env, {})
    assert cfg.namespaces == [
        {"name": "chat", "presence": True},
        {"name": "news-feed.v2", "history_size": 5, "history_ttl": "60s"},
    ]
    assert cfg.unknown_env == ["CENTRIFUGO_CHANNEL_NAMESPACES_GHOST_PRESENCE"]
    # Overrides apply to namespaces from a file too, in either form.
    v6 = build(
        {"channel": {"namespaces": [{"name": "chat"}]}},
        {"CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_JOIN_LEAVE": "1"},
        {},
    )
    assert v6.namespaces == [{"name": "chat", "join_leave": True}]
    v5 = build({"namespaces": [{"name": "chat"}]}, {"SWITCHBOARD_CHANNEL_NAMESPACES_CHAT_PRESENCE": "1"}, {})
    assert v5.namespaces == [{"name": "chat", "presence": True}]


def test_proxies_from_env() -> None:
    env = {
        "CENTRIFUGO_CLIENT_PROXY_CONNECT_ENABLED": "true",
        "CENTRIFUGO_CLIENT_PROXY_CONNECT_ENDPOINT": f"{URL}/connect",
        "CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_HEADERS": "Authorization Cookie",
        "CENTRIFUGO_PROXIES": f'[{{"name": "special", "endpoint": "{URL}/special"}}]',
        "CENTRIFUGO_PROXIES_SPECIAL_TIMEOUT": "3s",
        "CENTRIFUGO_RPC_WITHOUT_NAMESPACE_PROXY_ENABLED": "true",
        "CENTRIFUGO_RPC_WITHOUT_NAMESPACE_PROXY_NAME": "special",
    }
    table = proxy_table(build({}, env, {}))
    assert table.connect is not None and table.connect.http_headers == frozenset({"authorization", "cookie"})
    assert table.rpc is not None and (table.rpc.endpoint, table.rpc.timeout) == (f"{URL}/special", 3)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CENTRIFUGO_UNI_HTTP_STREAM_ENABLED": "yes"},
            r"CENTRIFUGO_UNI_HTTP_STREAM_ENABLED \(uni_http_stream",
        ),
        ({"CENTRIFUGO_HTTP_SERVER_PORT": "eighty"}, "http_server.port"),
        ({"CENTRIFUGO_CHANNEL_NAMESPACES": "[broken"}, "as JSON"),
        ({"CENTRIFUGO_CHANNEL_NAMESPACES": '{"name": "chat"}'}, "expected a list of objects"),
        ({"CENTRIFUGO_DEBUG_ENABLED": "true"}, "debug is not supported yet"),
        ({"CENTRIFUGO_ADMIN_ENABLED": "true"}, "admin.password and admin.secret must be set"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build({}, env, {})


def test_unknown_variables_are_reported_except_kubernetes_and_reserved_ones() -> None:
    env = {
        "CENTRIFUGO_NO_SUCH_OPTION": "1",
        "SWITCHBOARD_ALSO_NOTHING": "1",
        "CENTRIFUGO_SERVICE_HOST": "10.0.0.1",
        "CENTRIFUGO_PORT_8000_TCP": "tcp://10.0.0.1:8000",
        "CENTRIFUGO_API_SERVICE_PORT": "8000",
        "CENTRIFUGO_VAR_SECRET": "used by ${...} substitution",
        "PATH": "/bin",
    }
    assert build({}, env, {}).unknown_env == ["CENTRIFUGO_NO_SUCH_OPTION", "SWITCHBOARD_ALSO_NOTHING"]


def test_every_variable_name_means_one_thing() -> None:
    # A v6 name that is also a v4/v5 name must set the same option.
    for path, flat in SCHEMA.paths.items():
        env_name = path.upper().replace(".", "_").lower()
        if env_name in ENV_SCHEMA.flat and env_name != flat:
            canonical = {"name": "node_name"}.get(env_name, env_name)
            assert canonical == flat, (path, env_name, flat)


@pytest.mark.parametrize(("name", "expected"), [("chat", "CHAT"), ("news-feed.v2", "NEWS_FEED_V2")])
def test_name_for_env(name: str, expected: str) -> None:
    assert name_for_env(name) == expected


def test_env_does_not_change_the_callers_file_values() -> None:
    file: dict[str, Any] = {"channel": {"namespaces": [{"name": "chat"}]}}
    build(file, {"CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE": "true"}, {})
    assert file == {"channel": {"namespaces": [{"name": "chat"}]}}
