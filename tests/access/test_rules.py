"""The session management entries and the checks made against them, without a server."""

from __future__ import annotations

import pytest

from broker.access.rules import AccessRules, BadEntry

NOW = 1_800_000_000.0


def test_revoked_token_is_refused_until_it_expires() -> None:
    rules = AccessRules()
    rules.apply({"kind": "revoke_token", "uid": "jti-1", "expire_at": NOW + 60})
    refused = rules.refuses("u", "jti-1", 0, NOW)
    assert refused is not None and refused.code == 3500
    assert rules.refuses("u", "jti-2", 0, NOW) is None
    assert rules.refuses("u", "jti-1", 0, NOW + 61) is None  # expired: no longer refused
    assert rules.forget_expired(NOW + 61) == 1 and len(rules) == 0


def test_invalidated_tokens_are_those_issued_before() -> None:
    rules = AccessRules()
    rules.apply({"kind": "invalidate_user_tokens", "user": "u", "issued_before": NOW, "expire_at": 0})
    assert rules.refuses("u", "", int(NOW) - 1, NOW) is not None
    assert rules.refuses("u", "", int(NOW), NOW) is None  # a token issued after the call is fine
    assert rules.refuses("other", "", 0, NOW) is None
    # A later call with an older cut-off does not narrow an earlier one.
    rules.apply({"kind": "invalidate_user_tokens", "user": "u", "issued_before": NOW - 100, "expire_at": 0})
    assert rules.refuses("u", "", int(NOW) - 1, NOW) is not None


def test_block_and_unblock() -> None:
    rules = AccessRules()
    rules.apply({"kind": "block_user", "user": "u", "expire_at": 0})
    refused = rules.refuses("u", "any", int(NOW), NOW)
    assert refused is not None and refused.code == 3503 and not refused.reconnect
    assert rules.refuses("", "", 0, NOW) is None  # anonymous connections are no user
    rules.apply({"kind": "unblock_user", "user": "u"})
    assert rules.refuses("u", "any", int(NOW), NOW) is None


def test_snapshot_rebuilds_the_same_rules() -> None:
    rules = AccessRules()
    rules.apply({"kind": "revoke_token", "uid": "j", "expire_at": 0})
    rules.apply({"kind": "invalidate_user_tokens", "user": "a", "issued_before": NOW, "expire_at": NOW + 5})
    rules.apply({"kind": "block_user", "user": "b", "expire_at": NOW + 5})
    copy = AccessRules()
    for entry in rules.snapshot():
        copy.apply(entry)
    assert copy == rules


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "revoke_token"},
        {"kind": "revoke_token", "uid": ""},
        {"kind": "block_user", "user": 5},
        {"kind": "block_user", "user": "u", "expire_at": -1},
        {"kind": "block_user", "user": "u", "expire_at": True},
        {"kind": "erase_everything"},
        {},
    ],
)
def test_malformed_changes_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(BadEntry):
        AccessRules().apply(change)


def test_a_channels_subscription_tokens_are_invalidated_apart_from_connection_tokens() -> None:
    rules = AccessRules()
    change = {"kind": "invalidate_user_tokens", "user": "u", "channel": "$c", "issued_before": 100}
    rules.apply({**change, "expire_at": 500})
    assert rules.refuses_subscription_token("u", "$c", "", 99, now=10)
    assert not rules.refuses_subscription_token("u", "$c", "", 100, now=10)  # issued at the cut: good
    assert not rules.refuses_subscription_token("u", "$other", "", 1, now=10)
    assert not rules.refuses_subscription_token("someone", "$c", "", 1, now=10)
    assert rules.refuses("u", "", 1, now=10) is None  # connection tokens are not touched
    # Widening only, and kept in the snapshot a starting shard loads.
    rules.apply({**change, "issued_before": 50, "expire_at": 0})
    assert rules.refuses_subscription_token("u", "$c", "", 99, now=10)
    copy = AccessRules()
    for entry in rules.snapshot():
        copy.apply(entry)
    assert copy.invalidated_channels == rules.invalidated_channels and len(copy) == 1
    assert rules.forget_expired(now=600) == 0  # widened to never expire by the second call
    rules.apply({"kind": "revoke_token", "uid": "sub-jti", "expire_at": 0})
    assert rules.refuses_subscription_token("anyone", "$any", "sub-jti", 10**9, now=10)
