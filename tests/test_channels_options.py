"""Channel options: defaults, parsing, v3/v6 names and start-up validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.channels import ChannelOptions, ChannelRules, option_names
from broker.config import Config, ConfigError, build

HISTORY = {"history_size": 10, "history_ttl": "300s"}


def parse(**values: Any) -> ChannelOptions:
    return ChannelOptions.from_mapping(values, where="ns 'x'")


def test_defaults_are_all_off() -> None:
    options = ChannelOptions()
    for f in dataclasses.fields(ChannelOptions):
        value = getattr(options, f.name)
        assert value in (False, 0, 0.0, "", (), None), f.name
    assert not options.history_enabled
    assert parse() == options


def test_every_v5_option_is_accepted() -> None:
    values: dict[str, Any] = {
        "presence": True,
        "join_leave": True,
        "force_push_join_leave": True,
        "history_size": 100,
        "history_ttl": "1m30s",
        "history_meta_ttl": "720h",
        "force_positioning": True,
        "allow_positioning": True,
        "force_recovery": True,
        "allow_recovery": True,
        "force_recovery_mode": "cache",
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
        "allow_subscribe_for_anonymous": True,
        "allow_subscribe_for_client": True,
        "allow_publish_for_anonymous": True,
        "allow_publish_for_subscriber": True,
        "allow_publish_for_client": True,
        "allow_presence_for_anonymous": True,
        "allow_presence_for_subscriber": True,
        "allow_presence_for_client": True,
        "allow_history_for_anonymous": True,
        "allow_history_for_subscriber": True,
        "allow_history_for_client": True,
        "allow_user_limited_channels": True,
        "channel_regex": "^[a-z]+$",
        "proxy_subscribe": True,
        "proxy_publish": True,
        "proxy_sub_refresh": True,
        "proxy_subscribe_stream": True,
        "proxy_subscribe_stream_bidirectional": True,
        "subscribe_proxy_name": "a",
        "publish_proxy_name": "b",
        "sub_refresh_proxy_name": "c",
        "subscribe_stream_proxy_name": "d",
    }
    assert set(values) == option_names()
    options = ChannelOptions.from_mapping(values)
    assert options.history_ttl == 90.0
    assert options.history_meta_ttl == 720 * 3600
    assert options.history_enabled
    assert options.allowed_delta_types == ("fossil",)
    assert options.compiled_regex is not None
    for name, value in values.items():
        if name not in {"history_ttl", "history_meta_ttl", "allowed_delta_types"}:
            assert getattr(options, name) == value, name


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [("300s", 300.0), ("1h", 3600.0), ("1.5m", 90.0), (60, 60.0), (2.5, 2.5), ("45", 45.0)],
)
def test_history_ttl_accepts_go_durations_and_numbers(ttl: Any, seconds: float) -> None:
    assert parse(history_size=1, history_ttl=ttl).history_ttl == seconds


def test_history_enabled_needs_size_and_ttl() -> None:
    assert parse(**HISTORY).history_enabled
    assert not ChannelOptions(history_size=10).history_enabled
    assert not ChannelOptions(history_ttl=10).history_enabled


def test_history_meta_ttl_defaults_to_the_global_value() -> None:
    options = ChannelOptions.from_mapping(HISTORY, default_history_meta_ttl=3600)
    assert options.history_meta_ttl == 3600
    own = ChannelOptions.from_mapping({**HISTORY, "history_meta_ttl": "2h"}, default_history_meta_ttl=3600)
    assert own.history_meta_ttl == 7200


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"history_size": 10}, "history_size and history_ttl must both be set"),
        ({"history_ttl": "10s"}, "history_size and history_ttl must both be set"),
        ({"force_recovery": True}, "force_recovery needs history"),
        ({"force_positioning": True}, "force_positioning needs history"),
        ({**HISTORY, "history_meta_ttl": "60s"}, "must not exceed history_meta_ttl"),
        ({"presense": True}, "unknown channel option 'presense'"),
        ({"presence": "true"}, "presence: expected a boolean"),
        ({"presence": 1}, "presence: expected a boolean"),
        ({"history_size": "10", "history_ttl": "1s"}, "history_size: expected an integer"),
        ({"history_size": True, "history_ttl": "1s"}, "history_size: expected an integer"),
        ({"history_size": -1, "history_ttl": "1s"}, "history_size must not be below 0"),
        ({"history_size": 1, "history_ttl": "ten seconds"}, "history_ttl: not a duration"),
        ({"history_size": 1, "history_ttl": -5}, "history_ttl must not be below 0"),
        ({"history_size": 1, "history_ttl": True}, "history_ttl: not a duration"),
        ({"force_recovery_mode": "replay"}, "force_recovery_mode must be"),
        ({"allowed_delta_types": ["xdelta"]}, "allowed_delta_types must be one of 'fossil', got 'xdelta'"),
        ({"allowed_delta_types": "fossil"}, "allowed_delta_types: expected a list of strings"),
        ({"channel_regex": 5}, "channel_regex: expected a string"),
        ({"channel_regex": "("}, "invalid regular expression"),
        ({"subscribe_proxy_name": True}, "subscribe_proxy_name: expected a string"),
        ({"publish": "yes"}, "publish must be a boolean"),
        (
            {"proxy_publish": True, "publish_proxy_enabled": True},
            "both publish_proxy_enabled and proxy_publish",
        ),
    ],
)
def test_invalid_options_raise_config_error(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="ns 'x'") as info:
        parse(**values)
    assert message in str(info.value)


def test_history_ttl_checked_against_the_global_meta_ttl() -> None:
    with pytest.raises(ConfigError, match="history_meta_ttl"):
        ChannelOptions.from_mapping({"history_size": 1, "history_ttl": "2h"}, default_history_meta_ttl=3600)


def test_non_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected an object"):
        ChannelOptions.from_mapping(["presence"])  # type: ignore[arg-type]


def test_non_string_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="option names must be strings"):
        ChannelOptions.from_mapping({1: True})  # type: ignore[dict-item]


def test_direct_construction_compiles_the_regex() -> None:
    options = ChannelOptions(channel_regex="^a+$")
    assert options.compiled_regex.search("aaa") is not None
    with pytest.raises(ConfigError, match="invalid regular expression"):
        ChannelOptions(channel_regex="[")


def test_replace_keeps_the_compiled_regex_and_skips_validation() -> None:
    options = parse(channel_regex="^a$")
    changed = dataclasses.replace(options, force_recovery=True)
    assert changed.compiled_regex is options.compiled_regex
    assert changed.force_recovery and not changed.history_enabled


def test_v6_proxy_names_are_aliases() -> None:
    options = parse(
        subscribe_proxy_enabled=True,
        publish_proxy_enabled=True,
        sub_refresh_proxy_enabled=True,
        subscribe_stream_proxy_enabled=True,
    )
    assert options.proxy_subscribe and options.proxy_publish
    assert options.proxy_sub_refresh and options.proxy_subscribe_stream


# ---------------------------------------------------------------- v3 names


def test_v3_renames() -> None:
    options = parse(
        **HISTORY, recover=True, position=True, publish=True, subscribe_to_publish=True, anonymous=True
    )
    assert options.force_recovery and options.force_positioning
    assert options.allow_publish_for_client and options.allow_publish_for_subscriber
    assert options.allow_publish_for_anonymous  # v3 publish did not distinguish anonymous users
    assert options.allow_subscribe_for_anonymous


def test_v3_mapping_opens_subscriptions_unless_protected() -> None:
    open_ns = parse(anonymous=False)
    assert open_ns.allow_subscribe_for_client
    assert open_ns.allow_user_limited_channels
    assert not open_ns.allow_subscribe_for_anonymous
    protected = parse(protected=True, anonymous=True)
    assert not protected.allow_subscribe_for_client
    assert not protected.allow_subscribe_for_anonymous


def test_v3_presence_and_history_open_to_subscribers_unless_disabled() -> None:
    options = parse(**HISTORY, presence=True, join_leave=True, protected=False)
    assert options.allow_presence_for_subscriber and options.allow_presence_for_anonymous
    assert options.allow_history_for_subscriber and options.allow_history_for_anonymous
    assert options.force_push_join_leave
    assert not options.allow_presence_for_client and not options.allow_history_for_client
    closed = parse(
        **HISTORY, presence=True, presence_disable_for_client=True, history_disable_for_client=True
    )
    assert not closed.allow_presence_for_subscriber and not closed.allow_history_for_subscriber
    closed_too = parse(
        **HISTORY, presence=True, presence_disabled_for_client=True, history_disabled_for_client=True
    )
    assert not closed_too.allow_presence_for_subscriber and not closed_too.allow_history_for_subscriber


def test_v3_history_ttl_in_integer_seconds() -> None:
    assert parse(history_size=5, history_ttl=60, recover=True).history_ttl == 60.0


def test_explicit_v4_key_wins_over_v3_implication() -> None:
    options = parse(publish=True, allow_publish_for_anonymous=False, allow_subscribe_for_client=False)
    assert options.allow_publish_for_client
    assert not options.allow_publish_for_anonymous
    assert not options.allow_subscribe_for_client


def test_v3_recover_still_needs_history() -> None:
    with pytest.raises(ConfigError, match="force_recovery needs history"):
        parse(recover=True)


def test_v4_mapping_without_v3_keys_stays_closed() -> None:
    options = parse(presence=True)
    assert not options.allow_subscribe_for_client
    assert not options.allow_presence_for_subscriber


# ---------------------------------------------------------------- through the config loader


def test_options_from_file_and_environment() -> None:
    cfg = build(
        {"presence": True, "history_size": 10, "namespaces": [{"name": "chat", "history_size": 5}]},
        environ={"SWITCHBOARD_HISTORY_TTL": "300s", "SWITCHBOARD_ALLOW_SUBSCRIBE_FOR_CLIENT": "true"},
    )
    with pytest.raises(ConfigError, match="namespace 'chat': history_size and history_ttl"):
        ChannelRules.from_config(cfg)
    cfg.namespaces[0]["history_ttl"] = "10s"
    rules = ChannelRules.from_config(cfg)
    assert rules.top_level.presence and rules.top_level.history_ttl == 300.0
    assert rules.top_level.allow_subscribe_for_client
    assert rules.namespaces["chat"].history_size == 5
    assert rules.namespaces["chat"].history_meta_ttl == 720 * 3600


def test_namespaces_do_not_inherit_top_level_options() -> None:
    cfg = Config(
        channel_options={"presence": True, "allow_subscribe_for_client": True, **HISTORY},
        namespaces=[{"name": "chat"}],
    )
    rules = ChannelRules.from_config(cfg)
    assert rules.top_level.presence and rules.top_level.history_enabled
    assert rules.namespaces["chat"] == ChannelOptions(history_meta_ttl=720 * 3600)


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [
        ([{"name": "chat", "presense": True}], "namespace 'chat': unknown channel option 'presense'"),
        ([{"name": "x"}], "invalid namespace name 'x'"),
        ([{"presence": True}], "invalid namespace name None"),
        ([{"name": "a b"}], "invalid namespace name"),
        ([{"name": "chat"}, {"name": "chat"}], "must be unique"),
        (["chat"], "namespaces[0]: expected an object"),
    ],
)
def test_bad_namespaces(namespaces: list[Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ChannelRules.from_config(Config(namespaces=namespaces))
    assert message in str(info.value)


def test_top_level_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="top-level channel options: unknown channel option 'nope'"):
        ChannelRules.from_config(Config(channel_options={"nope": 1}))


def test_personal_namespace_must_exist() -> None:
    with pytest.raises(ConfigError, match="user_personal_channel_namespace 'personal'"):
        ChannelRules.from_config(
            Config(user_subscribe_to_personal=True, user_personal_channel_namespace="personal")
        )
    cfg = Config(
        user_subscribe_to_personal=True,
        user_personal_channel_namespace="personal",
        namespaces=[{"name": "personal"}],
    )
    assert ChannelRules.from_config(cfg).personal_channel("42") == "personal:#42"


def test_negative_max_length_is_refused() -> None:
    with pytest.raises(ConfigError, match="channel_max_length"):
        ChannelRules.from_config(Config(channel_max_length=-1))
