from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker import config_keys
from broker.channel_options import ChannelOptions
from broker.config import (
    CHANNEL_OPTION_KEYS,
    Config,
    ConfigError,
    Duration,
    build,
    env_values,
    format_duration,
    from_payload,
    load,
    parse_duration,
)


def write(path: Path, values: Any) -> Path:
    path.write_text(json.dumps(values))
    return path


# --- precedence ----------------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = build({}, {}, {})
    assert cfg.port == 8000
    assert cfg.ping_interval == 25 and isinstance(cfg.ping_interval, Duration)
    assert cfg.allowed_origins == []
    assert cfg.health is True
    assert cfg.unknown_keys == []


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json", {"port": 8100, "name": "file", "address": "10.0.0.1", "log_level": "warn"}
    )
    environ = {"SWITCHBOARD_PORT": "8200", "SWITCHBOARD_NAME": "env"}
    cfg = load(path, environ, {"port": 8300, "address": None})
    assert cfg.port == 8300  # flag beats env and file
    assert cfg.node_name == "env"  # env beats file ("name" is v5's spelling of node.name)
    assert cfg.address == "10.0.0.1"  # a flag given as None was not given
    assert cfg.log_level == "warn"  # file beats default


def test_load_without_file() -> None:
    cfg = load(None, {"SWITCHBOARD_API_KEY": "k"}, None)
    assert cfg.api_key == "k"


def test_centrifugo_alias_and_switchboard_wins() -> None:
    cfg = build({}, {"CENTRIFUGO_TOKEN_HMAC_SECRET_KEY": "legacy"}, {})
    assert cfg.token_hmac_secret_key == "legacy"
    both = {"CENTRIFUGO_TOKEN_HMAC_SECRET_KEY": "legacy", "SWITCHBOARD_TOKEN_HMAC_SECRET_KEY": "new"}
    assert build({}, both, {}).token_hmac_secret_key == "new"
    # The order variables appear in does not matter.
    reversed_env = dict(reversed(list(both.items())))
    assert build({}, reversed_env, {}).token_hmac_secret_key == "new"


def test_empty_env_var_is_unset() -> None:
    cfg = build({"api_key": "from-file"}, {"SWITCHBOARD_API_KEY": "", "CENTRIFUGO_PORT": ""}, {})
    assert cfg.api_key == "from-file"
    assert cfg.port == 8000


def test_env_ignores_unrelated_and_unknown_names() -> None:
    values = env_values({"PATH": "/bin", "SWITCHBOARD_NOT_A_KEY": "1", "CENTRIFUGO_PORT": "9000"})
    assert values == {"port": 9000}
    cfg = build({}, {"PATH": "/bin", "SWITCHBOARD_NOT_A_KEY": "1", "CENTRIFUGO_PORT": "9000"}, {})
    assert cfg.unknown_env == ["SWITCHBOARD_NOT_A_KEY"]


def test_flags_override_booleans_both_ways() -> None:
    cfg = build({"health": False, "sse": True}, {"SWITCHBOARD_UNI_SSE": "1"}, {"health": True, "sse": False})
    assert cfg.health is True and cfg.sse is False  # the flag beats the file
    cfg = build({"health": True}, {"SWITCHBOARD_UNI_SSE": "1"}, {"health": False, "uni_sse": False})
    assert cfg.health is False and cfg.uni_sse is False


# --- parsing values from the environment ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("t", True), ("TRUE", True), ("true", True), ("True", True), ("0", False), ("f", False),
     ("false", False), ("FALSE", False)],
)  # fmt: skip
def test_env_booleans(text: str, expected: bool) -> None:
    assert build({}, {"CENTRIFUGO_UNI_HTTP_STREAM": text}, {}).uni_http_stream is expected


@pytest.mark.parametrize("text", ["yes", "on", "2", "tRuE"])
def test_env_bad_booleans(text: str) -> None:
    with pytest.raises(ConfigError, match="uni_sse"):
        build({}, {"SWITCHBOARD_UNI_SSE": text}, {})


def test_env_lists() -> None:
    cfg = build({}, {"CENTRIFUGO_ALLOWED_ORIGINS": "https://a.example  https://b.example"}, {})
    assert cfg.allowed_origins == ["https://a.example", "https://b.example"]
    cfg = build({}, {"SWITCHBOARD_ALLOWED_ORIGINS": '["https://x", "*"]'}, {})
    assert cfg.allowed_origins == ["https://x", "*"]
    with pytest.raises(ConfigError):
        build({}, {"SWITCHBOARD_ALLOWED_ORIGINS": "[1, 2]"}, {})
    with pytest.raises(ConfigError):
        build({}, {"SWITCHBOARD_ALLOWED_ORIGINS": "[broken"}, {})


def test_env_ints_and_durations() -> None:
    cfg = build(
        {},
        {
            "SWITCHBOARD_PORT": " 9100 ",
            "SWITCHBOARD_PING_INTERVAL": "1m30s",
            "CENTRIFUGO_GLOBAL_HISTORY_META_TTL": "720h",
        },
        {},
    )
    assert cfg.port == 9100
    assert cfg.ping_interval == 90
    assert cfg.global_history_meta_ttl == 720 * 3600
    assert build({}, {"SWITCHBOARD_PONG_TIMEOUT": "12"}, {}).pong_timeout == 12
    with pytest.raises(ConfigError, match="port"):
        build({}, {"SWITCHBOARD_PORT": "eighty"}, {})


def test_env_namespaces_json() -> None:
    cfg = build({}, {"CENTRIFUGO_NAMESPACES": '[{"name": "chat", "presence": true}]'}, {})
    assert cfg.namespaces == [{"name": "chat", "presence": True}]
    with pytest.raises(ConfigError, match="namespaces"):
        build({}, {"CENTRIFUGO_NAMESPACES": '{"name": "chat"}'}, {})


def test_env_channel_options() -> None:
    cfg = build(
        {},
        {"SWITCHBOARD_PRESENCE": "true", "SWITCHBOARD_HISTORY_SIZE": "10", "SWITCHBOARD_HISTORY_TTL": "30s"},
        {},
    )
    assert cfg.channel_options == {"presence": True, "history_size": 10, "history_ttl": "30s"}


# --- durations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("25s", 25), ("1m30s", 90), ("720h", 2_592_000), ("1h1m1s", 3661), ("1.5h", 5400), ("500ms", 0.5),
     ("250us", 0.00025), ("250µs", 0.00025), ("100ns", 1e-7), ("0", 0), ("10", 10), ("2.5", 2.5), (30, 30),
     (0.25, 0.25)],
)  # fmt: skip
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "s", "1d", "1h 2m", "abc", "5x", True, None, [1]])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ConfigError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(604800, "168h0m0s"), (90, "1m30s"), (59, "59s"), (0, "0s"), (3600, "1h0m0s"), (3661, "1h1m1s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_duration_from_file_string_and_number() -> None:
    cfg = build({"client_expired_close_delay": "1m", "pong_timeout": 3}, {}, {})
    assert cfg.client_expired_close_delay == 60
    assert cfg.pong_timeout == 3


# --- unknown keys and bad values -----------------------------------------------------------------------


def test_unknown_keys_reported_not_fatal() -> None:
    cfg = build({"zeta": 1, "alpha": 2, "port": 9000}, {}, {})
    assert cfg.unknown_keys == ["alpha", "zeta"]
    assert cfg.port == 9000


def test_top_level_channel_options_are_known() -> None:
    cfg = build({"presence": True, "history_size": 10, "history_ttl": "300s"}, {}, {})
    assert cfg.unknown_keys == []
    assert cfg.channel_options == {"presence": True, "history_size": 10, "history_ttl": "300s"}


def test_every_channel_option_field_is_a_top_level_key() -> None:
    # The drift case: options added to ChannelOptions were once reported unknown at the top level.
    values = {
        "proxy_subscribe_stream": False,
        "proxy_subscribe_stream_bidirectional": False,
        "subscribe_stream_proxy_name": "streams",
    }
    cfg = build(values, {}, {})
    assert cfg.unknown_keys == []
    assert cfg.channel_options == values
    assert {f.name for f in dataclasses.fields(ChannelOptions)} - {"compiled_regex"} == CHANNEL_OPTION_KEYS


def test_every_config_field_is_a_key_from_file_and_environment() -> None:
    # A field added to Config is a config key at once, with no list to keep in step.
    for f in dataclasses.fields(Config):
        if f.name in {"channel_options", "unknown_keys", "unknown_env", "node_uid"}:
            continue
        value = getattr(Config(), f.name)
        cfg = build({f.name: float(value) if isinstance(value, Duration) else value}, {}, {})
        assert cfg.unknown_keys == [], f.name
        text = "x" if isinstance(value, str) else str(value)
        if isinstance(value, list | dict):
            text = orjson.dumps(value).decode()
        if isinstance(value, bool):
            text = "true" if value else "false"
        assert list(env_values({f"SWITCHBOARD_{f.name.upper()}": text})) == [f.name], f.name


# Keys Centrifugo users set that Switchboard does not implement yet: on → refused, off → accepted.
NOT_SUPPORTED_YET = [
    ("redis_use_lists", True, False),
    ("broker", "nats", ""),
    ("debug", True, False),
    ("swagger", True, False),
    ("admin_web_path", "/srv/web", ""),
    ("grpc_api", True, False),
    ("tls", True, False),
    ("websocket_compression", True, False),
    ("user_personal_single_connection", True, False),
    ("client_connection_limit", 100, 0),
    ("token_jwks_public_endpoint", "https://auth.example/jwks", ""),
    ("proxy_subscribe_stream_endpoint", "grpc://127.0.0.1:3000", ""),
    ("rpc_ping", True, False),
    ("consumers", [{"name": "c", "type": "postgresql"}], []),
    ("log_file", "/var/log/switchboard.log", ""),
    ("proxy_subscribe_stream", True, False),
]


def test_a_key_is_either_working_or_not_supported_yet() -> None:
    # Implementing a feature moves its keys into Config / ChannelOptions and out of broker.config_keys.
    working = {f.name for f in dataclasses.fields(Config)} | CHANNEL_OPTION_KEYS
    assert not set(config_keys.UNSUPPORTED_SWITCHES) & working
    assert not config_keys.setting_keys() & working
    assert not set(config_keys.INERT_KEYS) & working
    assert set(config_keys.UNSUPPORTED_CHANNEL_SWITCHES) <= CHANNEL_OPTION_KEYS
    assert set(config_keys.SETTINGS_OF) <= set(config_keys.UNSUPPORTED_SWITCHES)


@pytest.mark.parametrize(("key", "on", "off"), NOT_SUPPORTED_YET)
def test_not_supported_yet_key_switched_on_is_refused(key: str, on: Any, off: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} is not supported yet \({key}: "):
        build({key: on}, {}, {})
    with pytest.raises(ConfigError, match=rf"^{key} is not supported yet"):
        build({}, {f"CENTRIFUGO_{key.upper()}": orjson.dumps(on).decode()}, {})
    cfg = build({key: off}, {}, {})
    assert cfg.unknown_keys == []


@pytest.mark.parametrize("key", ["proxy_subscribe_stream", "subscribe_stream_proxy_enabled"])
def test_not_supported_yet_channel_option_is_refused_in_a_namespace(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^namespace 'chat': {key} is not supported yet"):
        build({"namespaces": [{"name": "chat", key: True}]}, {}, {})
    build({"namespaces": [{"name": "chat", key: False}]}, {}, {})


def test_not_supported_yet_switch_can_be_turned_off_by_env_and_flags() -> None:
    assert build({"debug": True}, {"SWITCHBOARD_DEBUG": "false"}, {}).unknown_keys == []
    assert build({"redis_use_lists": True}, {"CENTRIFUGO_REDIS_USE_LISTS": "false"}, {}).unknown_keys == []
    assert build({"swagger": True}, {}, {"swagger": False}).unknown_keys == []
    with pytest.raises(ConfigError, match=r"^swagger is not supported yet"):
        build({}, {}, {"swagger": True})


def test_settings_of_an_unsupported_feature_are_accepted_while_it_is_off() -> None:
    # A Centrifugo config may name a NATS or Redis address while running the memory engine.
    values = {
        "nats_url": "nats://127.0.0.1:4222",
        "admin_external": True,
        "redis_address": "redis://127.0.0.1:6379",
        "proxy_connect_timeout": "1s",
        "usage_stats_disable": True,
    }
    assert build(values, {}, {}).unknown_keys == []


def test_v6_nested_sections_are_read() -> None:
    cfg = build(
        {"client": {"token": {"hmac_secret_key": "k"}}, "http_api": {"key": "a"}, "admin": {}}, {}, {}
    )
    assert cfg.unknown_keys == []
    assert (cfg.token_hmac_secret_key, cfg.api_key) == ("k", "a")


@pytest.mark.parametrize(
    "values",
    [
        {"port": "8000"},
        {"port": True},
        {"port": 1.5},
        {"port": 0},
        {"port": 65536},
        {"shards": -1},
        {"uni_sse": "true"},
        {"uni_sse": 1},
        {"api_key": 5},
        {"allowed_origins": "https://a"},
        {"allowed_origins": [1]},
        {"ping_interval": "soon"},
        {"ping_interval": 0},
        {"log_level": "chatty"},
        {"api_error_mode": "loud"},
        {"http_request_head_timeout": 0},
        {"http_request_read_timeout": "0s"},
        {"http_idle_timeout": -1},
        {"http_max_pending_connections": 0},
        {"api_batch_max_size": 0},
        {"namespaces": {"name": "chat"}},
        {"namespaces": ["chat"]},
    ],
)
def test_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        build(values, {}, {})


def test_int_accepts_integral_float() -> None:
    assert build({"port": 9000.0}, {}, {}).port == 9000


def test_unknown_flag() -> None:
    with pytest.raises(ConfigError, match="unknown flag"):
        build({}, {}, {"no_such_flag": 1})


# --- namespaces ----------------------------------------------------------------------------------------


def test_namespaces_valid() -> None:
    cfg = build({"namespaces": [{"name": "chat"}, {"name": "news-feed_1.x", "presence": True}]}, {}, {})
    assert [ns["name"] for ns in cfg.namespaces] == ["chat", "news-feed_1.x"]


@pytest.mark.parametrize(
    "namespaces",
    [
        [{"name": "a"}],  # too short
        [{"name": "has space"}],
        [{"name": "colon:ns"}],
        [{"presence": True}],  # no name
        [{"name": 12}],
        [{"name": "chat"}, {"name": "chat"}],
    ],
)
def test_namespaces_invalid(namespaces: list[dict[str, Any]]) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        build({"namespaces": namespaces}, {}, {})


# --- files ---------------------------------------------------------------------------------------------


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.json", {}, {})
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(tmp_path / "bad.json", {}, {})
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match="must hold an object"):
        load(tmp_path / "list.json", {}, {})
    (tmp_path / "empty.json").write_text("  \n")
    assert load(tmp_path / "empty.json", {}, {}).port == 8000


# --- child-process payload -----------------------------------------------------------------------------


def test_payload_round_trip_through_json() -> None:
    cfg = build(
        {
            "port": 9100,
            "token_hmac_secret_key": "k",
            "allowed_origins": ["https://a"],
            "namespaces": [{"name": "chat", "presence": True}],
            "ping_interval": "1m30s",
            "presence": True,
            "mystery": 1,
        },
        {"SWITCHBOARD_UNI_SSE": "1"},
        {"shards": 3},
    )
    payload = cfg.to_payload()
    wire = orjson.loads(orjson.dumps(payload))  # child processes receive it as JSON
    again = from_payload(wire)
    assert again == cfg
    assert isinstance(again.ping_interval, Duration) and again.ping_interval == 90
    assert from_payload(payload) == cfg
    assert again.unknown_keys == ["mystery"]
    assert again.channel_options == {"presence": True}


def test_from_payload_ignores_unknown_fields() -> None:
    assert from_payload({"port": 9000, "from_a_newer_version": 1}).port == 9000


# --- derived values ------------------------------------------------------------------------------------


def test_derived_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config(shards=3).num_shards == 3
    assert Config().num_shards == (os.cpu_count() or 1)
    assert Config(runtime_dir="/run/sb").runtime_path == Path("/run/sb")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert Config(port=8123).runtime_path == Path("/run/user/1000/switchboard-8123")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert Config(port=8123).runtime_path == Path("/tmp/switchboard-8123")
    assert Config(node_name="node-a").node_display_name == "node-a"
    assert Config(port=8123).node_display_name.endswith("_8123")


def test_router_limits_and_timeouts() -> None:
    cfg = build({}, {}, {})
    assert (cfg.http_request_head_timeout, cfg.http_request_read_timeout, cfg.http_idle_timeout) == (
        10,
        60,
        60,
    )
    assert (cfg.http_max_pending_connections, cfg.api_batch_max_size) == (10000, 1000)
    values = {"http_request_head_timeout": "2s", "http_idle_timeout": "1m", "api_batch_max_size": 50}
    cfg = build(values, {}, {})
    assert (cfg.http_request_head_timeout, cfg.http_idle_timeout, cfg.api_batch_max_size) == (2, 60, 50)
    assert isinstance(cfg.http_request_head_timeout, Duration)


# -- the engine keys -------------------------------------------------------------------------------------


def test_engine_is_memory_by_default_and_redis_is_accepted():
    assert build({}, environ={}).engine == "memory"
    cfg = build({"engine": "redis", "redis_address": "redis://:pw@127.0.0.1:7000/2"}, environ={})
    assert cfg.engine == "redis" and cfg.redis_address == ["redis://:pw@127.0.0.1:7000/2"]
    with pytest.raises(ConfigError, match=r"engine \(engine.type\) must be one of 'memory', 'redis'"):
        build({"engine": "nats"}, environ={})


def test_redis_address_is_one_string_or_a_list_and_a_bad_one_is_refused():
    cfg = build({"engine": "redis", "redis_address": ["127.0.0.1:7000", "127.0.0.1:7001"]}, environ={})
    assert cfg.redis_address == ["127.0.0.1:7000", "127.0.0.1:7001"]
    from_env = build({}, environ={"SWITCHBOARD_REDIS_ADDRESS": "127.0.0.1:7000 127.0.0.1:7001"})
    assert from_env.redis_address == ["127.0.0.1:7000", "127.0.0.1:7001"]
    with pytest.raises(ConfigError, match="unknown scheme"):
        build({"engine": "redis", "redis_address": "nats://x:1"}, environ={})
    with pytest.raises(ConfigError, match="redis_prefix"):
        build({"engine": "redis", "redis_prefix": "a{b}"}, environ={})


def test_older_cluster_and_sentinel_spellings_become_addresses():
    from broker.engine.redis_address import redis_shards

    cluster = build({"engine": "redis", "redis_cluster_address": ["a:7000", "b:7001"]}, environ={})
    [shard] = redis_shards(cluster)
    assert shard.kind == "cluster" and shard.hosts == (("a", 7000), ("b", 7001))
    with pytest.raises(ConfigError, match="redis_sentinel_master_name"):
        build({"engine": "redis", "redis_sentinel_address": "s:26379"}, environ={})
    sentinel = build(
        {"engine": "redis", "redis_sentinel_address": "s:26379", "redis_sentinel_master_name": "m"},
        environ={},
    )
    [shard] = redis_shards(sentinel)
    assert shard.kind == "sentinel" and shard.sentinel_master_name == "m"


def test_redis_features_we_lack_are_refused_when_on():
    with pytest.raises(ConfigError, match="redis_use_lists is not supported yet"):
        build({"engine": "redis", "redis_use_lists": True}, environ={})
    assert build({"redis_use_lists": False, "redis_force_resp2": True}, environ={}).unknown_keys == []


def test_node_name_wins_over_name_and_timeouts_must_be_positive():
    assert Config(node_name="b").node_display_name == "b"
    assert Config(node_name="a").node_id == "a"
    assert Config(node_name="a", node_uid="u-1").node_id == "u-1"
    with pytest.raises(ConfigError, match=r"api_node_timeout \(http_api.node_timeout\) must be positive"):
        build({"api_node_timeout": 0}, environ={})


# -- the connect proxy -----------------------------------------------------------------------------------


def test_connect_proxy_keys():
    cfg = build(
        {
            "proxy_connect_endpoint": "http://127.0.0.1:3000/connect",
            "proxy_connect_timeout": "2s",
            "proxy_http_headers": ["Cookie"],
            "proxy_emulated_headers": ["X-App"],
            "proxy_static_http_headers": {"X-Static": "1"},
            "proxy_binary_encoding": True,
        },
        environ={"SWITCHBOARD_PROXY_STATIC_HTTP_HEADERS": '{"X-Env": "2"}'},
    )
    assert cfg.proxy_connect_timeout == 2 and cfg.proxy_static_http_headers == {"X-Env": "2"}
    assert cfg.proxy_http_headers == ["Cookie"] and cfg.proxy_emulated_headers == ["X-App"]
    for bad in ({"proxy_connect_endpoint": "ftp://x"}, {"proxy_connect_timeout": 0}):
        with pytest.raises(ConfigError):
            build(bad, environ={})
    with pytest.raises(ConfigError, match="expected an object of strings"):
        build({"proxy_static_http_headers": {"X": 1}}, environ={})
