"""Centrifugo v6's nested config: every option reads to the same internal config as its v4/v5 key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.channel_options import V6_ALIASES as ALIASES
from broker.channel_options import ChannelOptions
from broker.cli import _toml
from broker.config import Config, ConfigError, Duration, build, load
from broker.config_keys import UNSUPPORTED_CHANNEL_SWITCHES
from broker.proxy.table import proxy_table


def nested(path: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


def sample(f: dataclasses.Field[Any], default: Any) -> Any:
    """A valid value other than the default, as a file would hold it."""
    choices = f.metadata["choices"]
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, Duration):
        return float(default) * 2 or 3.5
    if isinstance(default, int):
        return default + 7 if f.name != "port" else 8123
    if isinstance(default, str):
        return "/x-" + f.name if f.name.endswith("handler_prefix") else "x-" + f.name
    if f.name == "redis_address":
        return ["127.0.0.1:6380"]
    if f.name == "namespaces":
        return [{"name": "chat", "presence": True}]
    if isinstance(default, list):
        return ["a", "b"]
    raise AssertionError(f"no sample for {f.name}")


# The admin switch needs its password and secret too: read in a test of its own.
OPTIONS = [f for f in dataclasses.fields(Config) if f.metadata.get("v6") and f.name != "admin"]
CHANNEL_OPTIONS = [
    f
    for f in dataclasses.fields(ChannelOptions)
    # Proxy switches and names need a proxy: test_v6_proxies_become_named_proxies covers them. Options
    # of features not supported yet are refused (test_config.py).
    if f.metadata.get("v6") and "proxy" not in f.name and f.name not in UNSUPPORTED_CHANNEL_SWITCHES
]


def write(path: Path, document: dict[str, Any]) -> Path:
    if path.suffix == ".toml":
        path.write_text(_toml(document))
    elif path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(document))
    else:
        path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("f", OPTIONS, ids=[f.name for f in OPTIONS])
def test_every_option_reads_the_same_from_its_v6_path(tmp_path: Path, f: dataclasses.Field[Any]) -> None:
    value = sample(f, getattr(Config(), f.name))
    v5 = load(write(tmp_path / "v5.json", {f.name: value}), {}, {})
    assert getattr(v5, f.name) != getattr(Config(), f.name)
    for suffix in (".json", ".yaml", ".toml"):
        v6 = load(write(tmp_path / f"v6{suffix}", nested(f.metadata["v6"], value)), {}, {})
        assert v6 == v5, suffix
        assert v6.unknown_keys == []


def test_admin_reads_the_same_from_its_v6_path(tmp_path: Path) -> None:
    v5 = load(
        write(tmp_path / "v5.json", {"admin": True, "admin_password": "p", "admin_secret": "s"}), {}, {}
    )
    v6_doc = {"admin": {"enabled": True, "password": "p", "secret": "s"}}
    v6 = load(write(tmp_path / "v6.yaml", v6_doc), {}, {})
    assert v6 == v5 and v6.admin and (v6.admin_password, v6.admin_secret) == ("p", "s")


def channel_sample(f: dataclasses.Field[Any]) -> Any:
    if f.metadata["choices"]:
        return [f.metadata["choices"][0]] if f.name == "allowed_delta_types" else f.metadata["choices"][1]
    default = getattr(ChannelOptions(), f.name)
    if isinstance(default, bool):
        return True
    if isinstance(default, int):
        return 10
    if isinstance(default, float):
        return "30s"
    return "x"


@pytest.mark.parametrize("f", CHANNEL_OPTIONS, ids=[f.name for f in CHANNEL_OPTIONS])
def test_every_channel_option_reads_the_same_from_v6(tmp_path: Path, f: dataclasses.Field[Any]) -> None:
    value = channel_sample(f)
    v5 = load(write(tmp_path / "v5.json", {f.name: value}), {}, {})
    for suffix in (".json", ".yaml", ".toml"):
        doc = nested(f"channel.without_namespace.{f.metadata['v6']}", value)
        v6 = load(write(tmp_path / f"v6{suffix}", doc), {}, {})
        assert {ALIASES.get(k, k): v for k, v in v6.channel_options.items()} == v5.channel_options, suffix


# Pairs from Centrifugo's v5 → v6 key map (the reference's table), written out by hand so that a wrong
# path in an option's declaration fails here.
REFERENCE = [
    ("token_hmac_secret_key", "client.token.hmac_secret_key", "s3cret"),
    ("token_rsa_public_key", "client.token.rsa_public_key", "pem"),
    ("token_audience", "client.token.audience", "aud"),
    ("token_issuer_regex", "client.token.issuer_regex", "^i$"),
    ("token_user_id_claim", "client.token.user_id_claim", "uid"),
    ("separate_subscription_token_config", "client.subscription_token.enabled", True),
    ("subscription_token_hmac_secret_key", "client.subscription_token.hmac_secret_key", "sub"),
    ("api_key", "http_api.key", "k"),
    ("api_insecure", "http_api.insecure", True),
    ("api_handler_prefix", "http_api.handler_prefix", "/capi"),
    ("api_error_mode", "http_api.error_mode", "transport"),
    ("allowed_origins", "client.allowed_origins", ["https://a"]),
    ("client_insecure", "client.insecure", True),
    ("allow_anonymous_connect_without_token", "client.allow_anonymous_connect_without_token", True),
    ("client_user_connection_limit", "client.user_connection_limit", 3),
    ("client_channel_limit", "client.channel_limit", 5),
    ("client_queue_max_size", "client.queue_max_size", 1000),
    ("ping_interval", "client.ping_interval", "10s"),
    ("pong_timeout", "client.pong_timeout", "4s"),
    ("client_stale_close_delay", "client.stale_close_delay", "3s"),
    ("client_expired_close_delay", "client.expired_close_delay", "1m"),
    ("client_history_max_publication_limit", "client.history_max_publication_limit", 10),
    ("client_recovery_max_publication_limit", "client.recovery_max_publication_limit", 10),
    ("user_subscribe_to_personal", "client.subscribe_to_user_personal_channel.enabled", True),
    (
        "user_personal_channel_namespace",
        "client.subscribe_to_user_personal_channel.personal_channel_namespace",
        "personal",
    ),
    ("global_history_meta_ttl", "channel.history_meta_ttl", "24h"),
    ("channel_max_length", "channel.max_length", 100),
    ("channel_private_prefix", "channel.private_prefix", "!"),
    ("channel_namespace_boundary", "channel.namespace_boundary", "/"),
    ("channel_user_boundary", "channel.user_boundary", "@"),
    ("channel_user_separator", "channel.user_separator", ";"),
    ("uni_http_stream", "uni_http_stream.enabled", True),
    ("uni_sse", "uni_sse.enabled", True),
    ("uni_websocket", "uni_websocket.enabled", True),
    ("sse", "sse.enabled", True),
    ("http_stream", "http_stream.enabled", True),
    ("websocket_disable", "websocket.disabled", True),
    ("websocket_message_size_limit", "websocket.message_size_limit", 1024),
    ("port", "http_server.port", 9001),
    ("address", "http_server.address", "127.0.0.1"),
    ("name", "node.name", "node-1"),
    ("engine", "engine.type", "redis"),
    ("redis_address", "engine.redis.address", "redis://127.0.0.1:6390"),
    ("redis_prefix", "engine.redis.prefix", "pfx"),
    ("redis_cluster_address", "engine.redis.cluster_address", ["127.0.0.1:7000"]),
    ("redis_sentinel_master_name", "engine.redis.sentinel_master_name", "m"),
    ("global_presence_ttl", "engine.redis.presence_ttl", "30s"),  # the struct path, not the converter's
    ("log_level", "log.level", "debug"),
    ("health", "health.enabled", False),
    ("shutdown_timeout", "shutdown.timeout", "5s"),
    ("rpc_namespace_boundary", "rpc.namespace_boundary", "."),
]


@pytest.mark.parametrize(("flat", "path", "value"), REFERENCE, ids=[row[0] for row in REFERENCE])
def test_reference_key_map(flat: str, path: str, value: Any) -> None:
    assert build(nested(path, value), {}, {}) == build({flat: value}, {}, {})


def test_channel_options_and_namespaces() -> None:
    v6 = {
        "channel": {
            "without_namespace": {"presence": True, "history_size": 10, "history_ttl": "5m"},
            "namespaces": [{"name": "chat", "allow_subscribe_for_client": True, "join_leave": True}],
        }
    }
    v5 = {
        "presence": True,
        "history_size": 10,
        "history_ttl": "5m",
        "namespaces": [{"name": "chat", "allow_subscribe_for_client": True, "join_leave": True}],
    }
    assert build(v6, {}, {}) == build(v5, {}, {})


# --- proxies ------------------------------------------------------------------------------------------

URL = "http://127.0.0.1:3000"


def test_v6_proxies_become_named_proxies() -> None:
    cfg = build(
        {
            "client": {
                "proxy": {
                    "connect": {"enabled": True, "endpoint": f"{URL}/connect", "timeout": "2s"},
                    "refresh": {"enabled": False, "endpoint": f"{URL}/refresh"},
                }
            },
            "channel": {
                "proxy": {
                    "subscribe": {"endpoint": f"{URL}/subscribe", "http_headers": ["Authorization"]},
                    "publish": {"endpoint": f"{URL}/publish", "http": {"static_headers": {"X-A": "1"}}},
                },
                "namespaces": [
                    {"name": "chat", "subscribe_proxy_enabled": True},
                    {"name": "feed", "publish_proxy_enabled": True, "publish_proxy_name": "special"},
                    {"name": "off", "subscribe_proxy_name": "special"},
                ],
            },
            "rpc": {
                "proxy": {"endpoint": f"{URL}/rpc"},
                "without_namespace": {"proxy_enabled": True},
                "namespaces": [{"name": "admin", "proxy_enabled": True, "proxy_name": "special"}],
            },
            "proxies": [{"name": "special", "endpoint": f"{URL}/special", "include_connection_meta": True}],
        },
        {},
        {},
    )
    table = proxy_table(cfg)
    assert table.connect is not None and table.connect.endpoint == f"{URL}/connect"
    assert table.connect.timeout == 2
    assert table.refresh is None  # not enabled
    assert table.rpc is not None and table.rpc.endpoint == f"{URL}/rpc"
    special = table.for_rpc("admin:do")
    assert special is not None and special.endpoint == f"{URL}/special" and special.include_connection_meta
    namespaces = {ns["name"]: ns for ns in cfg.namespaces}
    assert namespaces["chat"]["subscribe_proxy_name"] == "channel.proxy.subscribe"
    assert namespaces["feed"]["publish_proxy_name"] == "special"
    assert "subscribe_proxy_name" not in namespaces["off"]  # a name without the switch asks nothing
    subscribe = table.named["channel.proxy.subscribe"]
    assert subscribe.http_headers == frozenset({"authorization"})
    assert table.named["channel.proxy.publish"].static_http_headers == {"X-A": "1"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"channel": {"namespaces": [{"name": "chat", "subscribe_proxy_enabled": True}]}},
            "channel.proxy.subscribe.endpoint is not set",
        ),
        ({"rpc": {"without_namespace": {"proxy_enabled": True, "proxy_name": "x"}}}, "no proxy named 'x'"),
        ({"client": {"proxy": {"connect": {"enabled": True}}}}, "client.proxy.connect.endpoint is not set"),
        ({"client": {"proxy": {"conect": {}}}}, "client.proxy: unknown keys conect"),
        ({"channel": {"proxy": {"subscribe": {"endpoint": URL, "retries": 3}}}}, "unknown key 'retries'"),
        (
            {"channel": {"proxy": {"subscribe": {"endpoint": URL, "http": {"tls": {"enabled": True}}}}}},
            "http.tls is not supported yet",
        ),
        ({"rpc": {"proxy": {"endpoint": "grpc://127.0.0.1:1"}}}, "http:// or https://"),
        ({"proxies": [{"name": "default", "endpoint": URL}]}, 'other than "default"'),
        ({"proxies": [{"name": "a", "endpoint": URL}, {"name": "a", "endpoint": URL}]}, "used twice"),
    ],
)
def test_v6_proxy_mistakes_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build(doc, {}, {})


# --- the two forms, and files ---------------------------------------------------------------------------


def test_mixing_both_forms_is_an_error_naming_the_keys() -> None:
    with pytest.raises(ConfigError) as err:
        build({"client": {"insecure": True}, "http_api": {"key": "k"}, "api_key": "k", "port": 9000}, {}, {})
    text = str(err.value)
    assert "client, http_api" in text and "api_key, port" in text


def test_scalar_v5_values_of_v6_block_names_are_v5() -> None:
    cfg = build({"engine": "memory", "admin": False, "health": False}, {}, {})
    assert cfg.health is False and cfg.unknown_keys == []


def test_unknown_v6_paths_are_reported() -> None:
    cfg = build({"client": {"token": {"hmac_secret_key": "k", "typo": 1}}, "nothing": {"a": 1}}, {}, {})
    assert cfg.unknown_keys == ["client.token.typo", "nothing"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"admin": {"enabled": True, "web_path": "/srv/web"}}, "admin_web_path is not supported yet"),
        ({"admin": {"oidc": {"enabled": True}}}, "admin.oidc.enabled is not supported yet"),
        ({"debug": {"enabled": True}}, "debug is not supported yet"),
        ({"client": {"token": {"jwks_public_endpoint": URL}}}, "token_jwks_public_endpoint is not supported"),
        ({"broker": {"enabled": True, "type": "nats"}}, "broker.enabled is not supported yet"),
        ({"client": {"user_id_http_header": "X-User"}}, "client.user_id_http_header is not supported"),
        (
            {"channel": {"namespaces": [{"name": "chat", "subscribe_stream_proxy_enabled": True}]}},
            "subscribe_stream_proxy_enabled is not supported yet",
        ),
    ],
)
def test_v6_features_not_supported_yet_are_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(doc, {}, {})


def test_v6_settings_of_features_left_off_are_accepted() -> None:
    doc = {
        "swagger": {"enabled": False},
        "admin": {"enabled": False, "oidc": {"enabled": False, "issuer": "x"}},
        "debug": {"enabled": False},
        "grpc_api": {"enabled": False, "port": 10000},
        "websocket": {"write_timeout": "1s", "compression": False},
        "usage_stats": {"disabled": True},
    }
    assert build(doc, {}, {}).unknown_keys == []


V6_DOC: dict[str, Any] = {
    "client": {
        "token": {"hmac_secret_key": "secret"},
        "allowed_origins": ["https://a.example"],
        "ping_interval": "1m30s",
        "proxy": {
            "connect": {"enabled": True, "endpoint": f"{URL}/c", "http": {"static_headers": {"A": "b"}}}
        },
    },
    "http_api": {"key": "api"},
    "http_server": {"port": 9100},
    "uni_http_stream": {"enabled": True},
    "channel": {
        "without_namespace": {"presence": True},
        "namespaces": [{"name": "chat", "history_size": 5, "history_ttl": "30s", "force_recovery": True}],
    },
    "engine": {"type": "memory", "redis": {"address": ["127.0.0.1:6379"]}},
    "log": {"level": "warn"},
}
V5_DOC: dict[str, Any] = {
    "token_hmac_secret_key": "secret",
    "allowed_origins": ["https://a.example"],
    "ping_interval": 90,
    "granular_proxy_mode": True,
    "proxies": [{"name": "client.proxy.connect", "endpoint": f"{URL}/c", "static_http_headers": {"A": "b"}}],
    "connect_proxy_name": "client.proxy.connect",
    "api_key": "api",
    "port": 9100,
    "uni_http_stream": True,
    "presence": True,
    "namespaces": [{"name": "chat", "history_size": 5, "history_ttl": "30s", "force_recovery": True}],
    "engine": "memory",
    "redis_address": ["127.0.0.1:6379"],
    "log_level": "warn",
}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml", ".toml"])
def test_json_yaml_and_toml_files_read_the_same(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"config{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(V6_DOC))
    elif suffix == ".toml":
        path.write_text(_toml(V6_DOC))
    else:
        path.write_text(yaml.safe_dump(V6_DOC))
    flat = tmp_path / "v5.json"
    flat.write_text(json.dumps(V5_DOC))
    assert load(path, {}, {}) == load(flat, {}, {})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.yaml", "client: [unclosed", "not valid YAML"),
        ("c.toml", "client = ", "not valid TOML"),
        ("c.yaml", "- a\n- b\n", "must hold an object"),
        ("c.toml", "[client]\ninsecure = 'yes'\n", "expected a boolean"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(tmp_path / name, {}, {})
