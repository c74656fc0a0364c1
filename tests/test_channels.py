"""Channel rules: names, namespaces, user-limited and private channels, and every permission branch."""

from __future__ import annotations

from typing import Any

import pytest

from broker.auth import encode_token
from broker.channels import ChannelOptions, ChannelRules
from broker.config import Config
from broker.errors import ClientError, Disconnect
from broker.protocol.state import (
    SOURCE_CLIENT_ALLOWED,
    SOURCE_CLIENT_INSECURE,
    SOURCE_SUBSCRIBE_PROXY,
    SOURCE_SUBSCRIPTION_TOKEN,
    SOURCE_USER_LIMITED,
)

SECRET = "channel-secret-" + "k" * 49
NOW = 1_700_000_000.0
HISTORY = {"history_size": 10, "history_ttl": "300s"}


def make_rules(namespaces: list[dict[str, Any]] | None = None, **kwargs: Any) -> ChannelRules:
    cfg = Config(token_hmac_secret_key=SECRET, namespaces=namespaces or [], **kwargs)
    return ChannelRules.from_config(cfg)


def one_ns(**options: Any) -> ChannelRules:
    """Rules with a single namespace "ns" holding ``options``."""
    return make_rules([{"name": "ns", **options}])


def sub_token(user: str, channel: str, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, "channel": channel, "exp": int(NOW) + 3600, **claims}
    return encode_token({k: v for k, v in payload.items() if v is not None}, secret)


def assert_client_error(code: int, fn: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ClientError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code


def assert_disconnect(code: int, fn: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(Disconnect) as info:
        fn(*args, **kwargs)
    assert info.value.code == code


def subscribe(rules: ChannelRules, channel: str, user: str = "42", token: str = "", **kwargs: Any) -> Any:
    return rules.check_subscribe(channel, user, "client-1", token, NOW, **kwargs)


# ---------------------------------------------------------------- namespaces and options


def test_options_for_namespaces() -> None:
    rules = make_rules([{"name": "chat", "presence": True}], channel_options={"join_leave": True})
    assert rules.options_for("news").join_leave
    assert rules.options_for("chat:room").presence
    assert not rules.options_for("chat:room").join_leave  # no inheritance
    assert rules.options_for("$chat:room").presence  # private prefix stripped first
    assert rules.options_for("chat:a:b").presence  # first boundary only
    assert rules.options_for(":room").join_leave  # empty namespace is the top level
    assert rules.options_for("$news").join_leave
    assert rules.namespace_of("$chat:room") == "chat"
    assert rules.namespace_of("news") == ""


@pytest.mark.parametrize("channel", ["other:room", "$other:room", "chat$:x"])
def test_undefined_namespace_is_unknown_channel(channel: str) -> None:
    rules = make_rules([{"name": "chat"}])
    assert_client_error(102, rules.options_for, channel)
    assert_client_error(102, rules.validate_name, channel)


def test_custom_boundaries() -> None:
    rules = make_rules(
        [{"name": "chat", "allow_user_limited_channels": True}],
        channel_private_prefix="!",
        channel_namespace_boundary="/",
        channel_user_boundary="@",
        channel_user_separator=";",
    )
    assert rules.options_for("!chat/x").allow_user_limited_channels
    assert rules.is_private("!chat/x") and not rules.is_private("$chat/x")
    assert rules.is_user_limited_allowed("chat/dm@1;2", "2", rules.options_for("chat/dm@1;2"))
    assert rules.personal_channel("7") == "@7"


def test_empty_private_prefix_makes_nothing_private() -> None:
    rules = make_rules(channel_private_prefix="")
    assert not rules.is_private("$x")


# ---------------------------------------------------------------- name validation


def test_valid_names_return_their_options() -> None:
    rules = make_rules([{"name": "chat", "presence": True}])
    assert rules.validate_name("chat:room-1_~ !").presence
    assert rules.validate_name("news") == rules.top_level


@pytest.mark.parametrize("channel", ["", "caf\u00e9", "tab\there", "new\nline", "nul\x00", "del\x7f"])
def test_bad_names_are_bad_request(channel: str) -> None:
    assert_client_error(107, make_rules().validate_name, channel)


def test_length_limit_in_bytes() -> None:
    rules = make_rules()
    rules.validate_name("a" * 255)
    assert_client_error(107, rules.validate_name, "a" * 256)
    short = make_rules(channel_max_length=5)
    short.validate_name("abcde")
    assert_client_error(107, short.validate_name, "abcdef")
    regex = make_rules([{"name": "ns", "channel_regex": "."}], channel_max_length=8)
    regex.validate_name("ns:\u00e9\u00e9")  # 3 + 4 bytes
    assert_client_error(107, regex.validate_name, "ns:\u00e9\u00e9\u00e9")  # 3 + 6 bytes


def test_length_limit_zero_disables_it() -> None:
    make_rules(channel_max_length=0).validate_name("a" * 10_000)


def test_channel_regex_is_matched_against_the_rest() -> None:
    rules = one_ns(channel_regex="^[a-z0-9]+$")
    assert rules.validate_name("ns:room1") is rules.namespaces["ns"]
    rules.validate_name("$ns:room1")
    assert_client_error(107, rules.validate_name, "ns:Room")
    assert_client_error(107, rules.validate_name, "ns:")


def test_channel_regex_replaces_the_ascii_rule_but_not_the_nul_rule() -> None:
    rules = one_ns(channel_regex="^.+$")
    rules.validate_name("ns:caf\u00e9")
    rules.validate_name("ns:tab\t")
    assert_client_error(107, rules.validate_name, "ns:a\x00b")


def test_channel_regex_is_an_unanchored_search() -> None:
    rules = one_ns(channel_regex="[0-9]")
    rules.validate_name("ns:abc1def")
    assert_client_error(107, rules.validate_name, "ns:abcdef")


def test_top_level_regex_sees_the_whole_channel() -> None:
    rules = make_rules(channel_options={"channel_regex": "^\\$?[a-z]+$"})
    rules.validate_name("news")
    rules.validate_name("$news")
    assert_client_error(107, rules.validate_name, "news1")


def test_unknown_namespace_is_reported_before_the_shape() -> None:
    assert_client_error(102, make_rules().validate_name, "nope:caf\u00e9")


# ---------------------------------------------------------------- private, user-limited, personal


def test_is_private() -> None:
    rules = make_rules()
    assert rules.is_private("$secret")
    assert rules.is_private("$ns:secret")
    assert not rules.is_private("ns:$secret")


@pytest.mark.parametrize(
    ("channel", "user", "allowed"),
    [
        ("dialog#42", "42", True),
        ("dialog#42,43", "43", True),
        ("dialog#42,43", "44", False),
        ("dialog#42,43", "4", False),
        ("dialog#42,43", "", False),
        ("dialog#42,", "", False),  # an empty entry never admits anonymous users
        ("a#b#42", "42", True),  # after the LAST boundary
        ("a#42#b", "42", False),
        ("dialog", "42", False),
        ("#42", "42", True),
    ],
)
def test_user_limited(channel: str, user: str, allowed: bool) -> None:
    rules = make_rules()
    options = ChannelOptions(allow_user_limited_channels=True)
    assert rules.is_user_limited_allowed(channel, user, options) is allowed


def test_user_limited_needs_the_option() -> None:
    rules = make_rules()
    assert not rules.is_user_limited_allowed("dialog#42", "42", ChannelOptions())
    assert rules.is_user_limited("dialog#42") and not rules.is_user_limited("dialog")


def test_personal_channel() -> None:
    assert make_rules().personal_channel("42") == "#42"
    rules = make_rules([{"name": "personal"}], user_personal_channel_namespace="personal")
    assert rules.personal_channel("42") == "personal:#42"


# ---------------------------------------------------------------- history limit


@pytest.mark.parametrize(
    ("cap", "requested", "limit"),
    [
        (300, 0, 0),
        (300, 10, 10),
        (300, 300, 300),
        (300, 301, 300),
        (300, -1, 300),
        (0, -1, -1),
        (0, 5000, 5000),
    ],
)
def test_history_limit(cap: int, requested: int, limit: int) -> None:
    assert make_rules(client_history_max_publication_limit=cap).history_limit(requested) == limit


# ---------------------------------------------------------------- subscribe: private and tokens


def test_private_channel_without_token_is_denied_before_every_other_rule() -> None:
    rules = make_rules(
        [{"name": "ns", "allow_subscribe_for_client": True, "allow_user_limited_channels": True}],
        client_insecure=True,
    )
    assert_client_error(103, subscribe, rules, "$ns:dm#42")
    assert_client_error(103, subscribe, rules, "$public")


def test_valid_token_grants_a_private_channel() -> None:
    rules = make_rules()
    token = sub_token("42", "$secret", iat=int(NOW) - 10, jti="tok-1", info={"role": "x"}, data={"d": 1})
    decision = subscribe(rules, "$secret", token=token)
    assert decision.source == SOURCE_SUBSCRIPTION_TOKEN
    assert decision.claims is not None and decision.claims.user == "42"
    assert decision.token_uid == "tok-1"
    assert decision.token_issued_at == int(NOW) - 10
    assert decision.info == b'{"role":"x"}'
    assert decision.data == b'{"d":1}'
    assert decision.expire_at == int(NOW) + 3600
    assert not decision.ask_proxy
    assert decision.options == rules.top_level


def test_token_without_exp_never_expires() -> None:
    decision = subscribe(make_rules(), "$secret", token=sub_token("42", "$secret", exp=None))
    assert decision.expire_at == 0
    assert decision.token_uid == "" and decision.token_issued_at == 0


def test_token_expire_at_overrides_exp() -> None:
    rules = make_rules()
    later = int(NOW) + 99_999
    assert subscribe(rules, "$s", token=sub_token("42", "$s", expire_at=later)).expire_at == later
    assert subscribe(rules, "$s", token=sub_token("42", "$s", expire_at=0)).expire_at == 0
    # expire_at in the past: the token is valid but the subscription would already be over.
    assert_client_error(110, subscribe, rules, "$s", token=sub_token("42", "$s", expire_at=int(NOW) - 1))
    assert_client_error(110, subscribe, rules, "$s", token=sub_token("42", "$s", expire_at=int(NOW)))


def test_expired_token_is_109() -> None:
    token = sub_token("42", "$s", exp=int(NOW) - 1)
    assert_client_error(109, subscribe, make_rules(), "$s", token=token)


@pytest.mark.parametrize(
    "token",
    [
        sub_token("42", "$s", secret="another-secret-" + "z" * 49),
        "not.a.token",
        "garbage",
        sub_token("42", "$s")[:-3] + "AAA",
        encode_token({"sub": "42", "exp": int(NOW) + 60}, SECRET),  # no channel claim
        encode_token({"sub": 42, "channel": "$s"}, SECRET),  # sub of the wrong type
    ],
)
def test_invalid_token_is_permission_denied(token: str) -> None:
    assert_client_error(103, subscribe, make_rules(), "$s", token=token)


@pytest.mark.parametrize(
    ("token_user", "token_channel", "token_client"),
    [
        ("43", "$s", None),  # another user's token
        ("", "$s", None),  # an anonymous token used by a known user
        ("42", "$other", None),  # a token for another channel
        ("42", "$s", "client-2"),  # a token bound to another connection
    ],
)
def test_mismatched_token_disconnects(token_user: str, token_channel: str, token_client: str | None) -> None:
    token = sub_token(token_user, token_channel, client=token_client)
    assert_disconnect(3500, subscribe, make_rules(), "$s", token=token)


def test_token_bound_to_this_client_is_accepted() -> None:
    decision = subscribe(make_rules(), "$s", token=sub_token("42", "$s", client="client-1"))
    assert decision.claims is not None and decision.claims.client == "client-1"


def test_anonymous_connection_with_anonymous_token() -> None:
    decision = subscribe(make_rules(), "$s", user="", token=sub_token("", "$s"))
    assert decision.source == SOURCE_SUBSCRIPTION_TOKEN


def test_token_is_verified_on_public_channels_too() -> None:
    rules = one_ns(allow_subscribe_for_client=True)
    assert_client_error(103, subscribe, rules, "ns:open", token="bad.token.here")
    assert subscribe(rules, "ns:open", token=sub_token("42", "ns:open")).source == SOURCE_SUBSCRIPTION_TOKEN


def test_without_keys_every_token_is_refused() -> None:
    rules = ChannelRules.from_config(Config())
    assert_client_error(103, subscribe, rules, "$s", token=sub_token("42", "$s"))
    bare = ChannelRules(ChannelOptions(), {})
    assert_client_error(103, subscribe, bare, "$s", token=sub_token("42", "$s"))


def test_separate_subscription_token_keys() -> None:
    cfg = Config(
        token_hmac_secret_key=SECRET,
        separate_subscription_token_config=True,
        subscription_token_hmac_secret_key="sub-secret-" + "s" * 53,
    )
    rules = ChannelRules.from_config(cfg)
    assert_client_error(103, subscribe, rules, "$s", token=sub_token("42", "$s"))
    decision = subscribe(rules, "$s", token=sub_token("42", "$s", secret="sub-secret-" + "s" * 53))
    assert decision.source == SOURCE_SUBSCRIPTION_TOKEN


def test_token_override_changes_the_effective_options() -> None:
    rules = one_ns(presence=True, join_leave=False, **HISTORY)
    override = {
        "presence": {"value": False},
        "join_leave": {"value": True},
        "force_push_join_leave": {"value": True},
        "force_positioning": {"value": True},
        "force_recovery": {"value": True},
    }
    decision = subscribe(rules, "ns:x", token=sub_token("42", "ns:x", override=override))
    effective = decision.options
    assert not effective.presence
    assert effective.join_leave and effective.force_push_join_leave
    assert effective.force_positioning and effective.force_recovery
    assert effective.history_size == 10  # untouched options stay
    assert rules.namespaces["ns"].presence  # the shared options are not changed
    assert decision.claims is not None and decision.claims.override == {
        "presence": False,
        "join_leave": True,
        "force_push_join_leave": True,
        "force_positioning": True,
        "force_recovery": True,
    }


def test_partial_override_keeps_other_options() -> None:
    rules = one_ns(presence=True, join_leave=True)
    token = sub_token("42", "ns:x", override={"join_leave": {"value": False}})
    effective = subscribe(rules, "ns:x", token=token).options
    assert effective.presence and not effective.join_leave


# ---------------------------------------------------------------- subscribe: other grants


def test_user_limited_subscription() -> None:
    rules = one_ns(allow_user_limited_channels=True)
    assert subscribe(rules, "ns:dm#42,43").source == SOURCE_USER_LIMITED
    assert subscribe(rules, "ns:dm#42").source == SOURCE_USER_LIMITED
    assert_client_error(103, subscribe, rules, "ns:dm#43,44")
    assert_client_error(103, subscribe, rules, "ns:dm#42", user="")


def test_user_limited_falls_through_to_client_permission() -> None:
    rules = one_ns(allow_user_limited_channels=True, allow_subscribe_for_client=True)
    assert subscribe(rules, "ns:dm#43").source == SOURCE_CLIENT_ALLOWED


def test_user_limited_channel_without_the_option_uses_client_permission() -> None:
    assert_client_error(103, subscribe, one_ns(), "ns:dm#42")
    assert subscribe(one_ns(allow_subscribe_for_client=True), "ns:dm#42").source == SOURCE_CLIENT_ALLOWED


def test_allow_subscribe_for_client() -> None:
    rules = one_ns(allow_subscribe_for_client=True)
    decision = subscribe(rules, "ns:x")
    assert decision.source == SOURCE_CLIENT_ALLOWED
    assert (
        decision.claims is None
        and decision.expire_at == 0
        and decision.info is None
        and decision.data is None
    )
    assert_client_error(103, subscribe, rules, "ns:x", user="")


def test_allow_subscribe_for_anonymous_needs_client_permission() -> None:
    rules = one_ns(allow_subscribe_for_client=True, allow_subscribe_for_anonymous=True)
    assert subscribe(rules, "ns:x", user="").source == SOURCE_CLIENT_ALLOWED
    assert_client_error(103, subscribe, one_ns(allow_subscribe_for_anonymous=True), "ns:x", user="")


def test_client_insecure_subscribes_anyone() -> None:
    rules = make_rules([{"name": "ns"}], client_insecure=True)
    assert subscribe(rules, "ns:x").source == SOURCE_CLIENT_INSECURE
    assert subscribe(rules, "ns:x", user="").source == SOURCE_CLIENT_INSECURE
    # The cheaper grants are still reported as what they are.
    rules = make_rules([{"name": "ns", "allow_subscribe_for_client": True}], client_insecure=True)
    assert subscribe(rules, "ns:x").source == SOURCE_CLIENT_ALLOWED
    assert subscribe(rules, "ns:x", user="").source == SOURCE_CLIENT_INSECURE


def test_nothing_allows_means_permission_denied() -> None:
    assert_client_error(103, subscribe, one_ns(), "ns:x")
    assert_client_error(103, subscribe, make_rules(), "news")


def test_subscribe_proxy_only_when_available() -> None:
    rules = make_rules(
        [
            {
                "name": "ns",
                "proxy_subscribe": True,
                "allow_subscribe_for_client": True,
                "allow_user_limited_channels": True,
            }
        ],
        proxy_subscribe_endpoint="http://127.0.0.1:9/subscribe",
    )
    decision = subscribe(rules, "ns:x", proxy_available=True)
    assert decision.ask_proxy and decision.source == SOURCE_SUBSCRIBE_PROXY
    assert subscribe(rules, "ns:x").source == SOURCE_CLIENT_ALLOWED
    # A user-limited match and a token both come before the proxy.
    assert subscribe(rules, "ns:dm#42", proxy_available=True).source == SOURCE_USER_LIMITED
    token = sub_token("42", "ns:x")
    assert subscribe(rules, "ns:x", token=token, proxy_available=True).source == SOURCE_SUBSCRIPTION_TOKEN
    # The private rule comes before the proxy as well.
    assert_client_error(103, subscribe, rules, "$ns:x", proxy_available=True)


def test_subscribe_limits_and_order() -> None:
    rules = one_ns(allow_subscribe_for_client=True)
    assert_client_error(107, subscribe, rules, "")
    assert_client_error(107, subscribe, rules, "x" * 256, channel_count=500)  # length before the limit
    assert_client_error(106, subscribe, rules, "ns:x", channel_count=128)
    assert_client_error(106, subscribe, rules, "nope:x", channel_count=128)  # limit before namespace
    subscribe(rules, "ns:x", channel_count=127)
    assert_client_error(105, subscribe, rules, "ns:x", already_subscribed=True)
    assert_client_error(102, subscribe, rules, "nope:x")
    assert_client_error(102, subscribe, rules, "nope:x", token=sub_token("42", "nope:x"))
    assert_client_error(107, subscribe, rules, "ns:caf\u00e9")
    assert_client_error(107, subscribe, rules, "$ns:caf\u00e9")  # shape before the private rule
    unlimited = make_rules([{"name": "ns", "allow_subscribe_for_client": True}], client_channel_limit=0)
    subscribe(unlimited, "ns:x", channel_count=10_000)


# ---------------------------------------------------------------- publish, presence, history

# (for_client, for_subscriber, for_anonymous, user, subscribed, insecure) → allowed
PERMISSION_MATRIX = [
    (True, False, False, "42", False, False, True),
    (True, False, False, "", False, False, False),
    (True, False, True, "", False, False, True),
    (False, True, False, "42", True, False, True),
    (False, True, False, "42", False, False, False),
    (False, True, False, "", True, False, False),
    (False, True, True, "", True, False, True),
    (False, False, True, "", True, False, False),
    (False, False, False, "42", True, False, False),
    (False, False, False, "42", False, True, True),
    (False, False, False, "", False, True, True),
]


def _rules_for(feature: str, granted: tuple[bool, bool, bool], insecure: bool, **extra: Any) -> ChannelRules:
    for_client, for_subscriber, for_anonymous = granted
    options = {
        f"allow_{feature}_for_client": for_client,
        f"allow_{feature}_for_subscriber": for_subscriber,
        f"allow_{feature}_for_anonymous": for_anonymous,
        **extra,
    }
    return make_rules([{"name": "ns", **options}], client_insecure=insecure)


@pytest.mark.parametrize(
    ("for_client", "for_sub", "for_anon", "user", "subscribed", "insecure", "ok"), PERMISSION_MATRIX
)
def test_publish_permissions(
    for_client: bool, for_sub: bool, for_anon: bool, user: str, subscribed: bool, insecure: bool, ok: bool
) -> None:
    rules = _rules_for("publish", (for_client, for_sub, for_anon), insecure)
    if ok:
        decision = rules.check_publish("ns:x", user, subscribed=subscribed)
        assert decision.options is rules.namespaces["ns"] and not decision.ask_proxy
    else:
        assert_client_error(103, rules.check_publish, "ns:x", user, subscribed=subscribed)


@pytest.mark.parametrize(
    ("for_client", "for_sub", "for_anon", "user", "subscribed", "insecure", "ok"), PERMISSION_MATRIX
)
def test_presence_permissions(
    for_client: bool, for_sub: bool, for_anon: bool, user: str, subscribed: bool, insecure: bool, ok: bool
) -> None:
    rules = _rules_for("presence", (for_client, for_sub, for_anon), insecure, presence=True)
    for check in (rules.check_presence, rules.check_presence_stats):
        if ok:
            assert check("ns:x", user, subscribed=subscribed).presence
        else:
            assert_client_error(103, check, "ns:x", user, subscribed=subscribed)


@pytest.mark.parametrize(
    ("for_client", "for_sub", "for_anon", "user", "subscribed", "insecure", "ok"), PERMISSION_MATRIX
)
def test_history_permissions(
    for_client: bool, for_sub: bool, for_anon: bool, user: str, subscribed: bool, insecure: bool, ok: bool
) -> None:
    rules = _rules_for("history", (for_client, for_sub, for_anon), insecure, **HISTORY)
    if ok:
        assert rules.check_history("ns:x", user, subscribed=subscribed).history_enabled
    else:
        assert_client_error(103, rules.check_history, "ns:x", user, subscribed=subscribed)


def test_presence_off_is_not_available_even_when_insecure() -> None:
    rules = _rules_for("presence", (True, True, True), True)
    assert_client_error(108, rules.check_presence, "ns:x", "42", subscribed=True)
    assert_client_error(108, rules.check_presence_stats, "ns:x", "42", subscribed=True)


def test_history_off_is_not_available_even_when_insecure() -> None:
    rules = _rules_for("history", (True, True, True), True)
    assert_client_error(108, rules.check_history, "ns:x", "42", subscribed=True)


def test_feature_off_comes_before_permission() -> None:
    rules = one_ns()
    assert_client_error(108, rules.check_presence, "ns:x", "", subscribed=False)
    assert_client_error(108, rules.check_history, "ns:x", "", subscribed=False)


def test_publish_proxy_only_when_available() -> None:
    rules = make_rules(
        [{"name": "ns", "proxy_publish": True}], proxy_publish_endpoint="http://127.0.0.1:9/publish"
    )
    assert rules.check_publish("ns:x", "", subscribed=False, proxy_available=True).ask_proxy
    assert_client_error(103, rules.check_publish, "ns:x", "", subscribed=False)
    open_rules = one_ns(allow_publish_for_client=True)
    assert not open_rules.check_publish("ns:x", "42", subscribed=False, proxy_available=True).ask_proxy


@pytest.mark.parametrize(
    "method", ["check_publish", "check_presence", "check_presence_stats", "check_history"]
)
def test_checks_validate_the_channel(method: str) -> None:
    rules = make_rules(client_insecure=True, channel_options={"presence": True, **HISTORY})
    check = getattr(rules, method)
    assert_client_error(107, check, "", "42", subscribed=True)
    assert_client_error(102, check, "nope:x", "42", subscribed=True)
    assert_client_error(107, check, "caf\u00e9", "42", subscribed=True)
    check("news", "42", subscribed=True)
