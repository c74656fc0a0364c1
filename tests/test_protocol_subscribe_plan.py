"""The subscribe plan, one row per branch: every refusal and every accepted shape, without a session."""

from __future__ import annotations

from typing import Any

import pytest

from broker.auth import encode_token
from broker.channels import ChannelRules
from broker.config import Config
from broker.errors import ClientError, Disconnect
from broker.protocol.state import SOURCE_CLIENT_ALLOWED, SOURCE_SUBSCRIPTION_TOKEN, ConnectionState
from broker.protocol.subscribe_plan import SubscribePlan, held_to_deliver, plan_subscribe
from broker.publication import Publication

SECRET = "plan-secret-" + "k" * 52
NOW = 1_700_000_000.0
HISTORY = {"history_size": 10, "history_ttl": "300s"}
OPEN = {"allow_subscribe_for_client": True}


def rules(channel_limit: int = 0, **options: Any) -> ChannelRules:
    """Rules with one namespace "ns" holding ``options``."""
    cfg = Config(
        token_hmac_secret_key=SECRET,
        client_channel_limit=channel_limit,
        namespaces=[{"name": "ns", **options}],
    )
    return ChannelRules.from_config(cfg)


def session(user: str = "42", channels: tuple[str, ...] = ()) -> ConnectionState:
    state = ConnectionState("client-1", "session-1", "websocket", "json", NOW)
    state.user = user
    for channel in channels:
        state.channels[channel] = SOURCE_CLIENT_ALLOWED
    return state


def token(channel: str = "$ns:c", user: str = "42", **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, "channel": channel, "exp": int(NOW) + 3600, **claims}
    return encode_token(payload, SECRET)


def plan(options: dict[str, Any], request: dict[str, Any], **kwargs: Any) -> SubscribePlan:
    limit = kwargs.pop("channel_limit", 0)
    return plan_subscribe(rules(limit, **options), session(**kwargs), request, NOW)


REFUSALS = [
    pytest.param(OPEN, {}, {}, 3501, id="no-channel-3501"),
    pytest.param(OPEN, {"channel": "ns:c", "token": 5}, {}, 3501, id="token-not-a-string-3501"),
    pytest.param(OPEN, {"channel": "other:c"}, {}, 102, id="unknown-namespace-102"),
    pytest.param({}, {"channel": "ns:c"}, {}, 103, id="not-permitted-103"),
    pytest.param(OPEN, {"channel": "$ns:c"}, {}, 103, id="private-without-token-103"),
    pytest.param(OPEN, {"channel": "$ns:c", "token": "not-a-jwt"}, {}, 103, id="bad-token-103"),
    pytest.param(OPEN, {"channel": "ns:c"}, {"channels": ("ns:c",)}, 105, id="already-subscribed-105"),
    pytest.param(OPEN, {"channel": "ns:c"}, {"channels": ("ns:a",), "channel_limit": 1}, 106, id="limit-106"),
    pytest.param(
        OPEN, {"channel": "$ns:c", "token": token(exp=int(NOW) - 1)}, {}, 109, id="token-expired-109"
    ),
    pytest.param(
        OPEN, {"channel": "$ns:c", "token": token(expire_at=int(NOW) - 1)}, {}, 110, id="sub-expired-110"
    ),
    pytest.param(OPEN, {"channel": "$ns:c", "token": token(user="7")}, {}, 3500, id="other-user-3500"),
    pytest.param(OPEN, {"channel": "$ns:c", "token": token("$ns:d")}, {}, 3500, id="other-channel-3500"),
    pytest.param(OPEN, {"channel": "$ns:c", "token": token(client="x")}, {}, 3500, id="other-client-3500"),
]


@pytest.mark.parametrize(("options", "request_", "state", "code"), REFUSALS)
def test_refusals(
    options: dict[str, Any], request_: dict[str, Any], state: dict[str, Any], code: int
) -> None:
    with pytest.raises((ClientError, Disconnect)) as info:
        plan(options, request_, **state)
    assert info.value.code == code


SUB = {"allow_history_for_subscriber": True, "allow_presence_for_subscriber": True}
# (options, request) -> (join_leave, recoverable, positioned, recover, result keys)
SHAPES = [
    pytest.param(OPEN, {}, (False, False, False, False), [], id="plain"),
    pytest.param(
        {**OPEN, **HISTORY}, {"recoverable": True}, (False, False, False, False), [], id="history-denied"
    ),
    pytest.param(
        OPEN, {"recoverable": True, "positioned": True}, (False,) * 4, [], id="no-history-no-position"
    ),
    pytest.param(
        {**OPEN, **HISTORY, **SUB},
        {"positioned": True},
        (False, False, True, False),
        ["positioned"],
        id="positioned",
    ),
    pytest.param(
        {**OPEN, **HISTORY, "force_positioning": True},
        {},
        (False, False, True, False),
        ["positioned"],
        id="forced-positioning",
    ),
    pytest.param(
        {**OPEN, **HISTORY, **SUB},
        {"recoverable": True},
        (False, True, True, False),
        ["recoverable", "positioned"],
        id="recoverable-fresh",
    ),
    pytest.param(
        {**OPEN, **HISTORY, "allow_recovery": True},
        {"recoverable": True, "recover": True},
        (False, True, True, True),
        ["recoverable", "positioned"],
        id="recover-allowed-by-option",
    ),
    pytest.param(
        {**OPEN, **HISTORY, "force_recovery": True},
        {"recover": True},
        (False, True, True, True),
        ["recoverable", "positioned"],
        id="forced-recovery-recovers",
    ),
    pytest.param(OPEN, {"recover": True}, (False,) * 4, [], id="recover-without-history-is-plain"),
    pytest.param(
        {**OPEN, "join_leave": True, "presence": True, **SUB},
        {"join_leave": True},
        (True, False, False, False),
        [],
        id="join-leave",
    ),
    pytest.param(
        {**OPEN, "join_leave": True, "presence": True},
        {"join_leave": True},
        (False, False, False, False),
        [],
        id="join-leave-without-presence-permission",
    ),
    pytest.param(
        {**OPEN, "presence": True, **SUB},
        {"join_leave": True},
        (False, False, False, False),
        [],
        id="join-leave-not-enabled",
    ),
    pytest.param(
        {**OPEN, "join_leave": True, "presence": True, **SUB},
        {},
        (False, False, False, False),
        [],
        id="join-leave-not-asked",
    ),
]


@pytest.mark.parametrize(("options", "request_", "shape", "keys"), SHAPES)
def test_accepted_shapes(
    options: dict[str, Any], request_: dict[str, Any], shape: tuple[bool, ...], keys: list[str]
) -> None:
    got = plan(options, {"channel": "ns:c", **request_})
    assert (got.join_leave, got.recoverable, got.positioned, got.recover) == shape
    assert list(got.result(NOW)) == keys
    assert got.channel == "ns:c"
    assert got.decision.source == SOURCE_CLIENT_ALLOWED
    assert not got.records_token


def test_token_grant_is_recorded_with_expiry_and_data() -> None:
    got = plan(OPEN, {"channel": "$ns:c", "token": token(jti="t-1", iat=int(NOW) - 5, data={"a": 1})})
    assert got.decision.source == SOURCE_SUBSCRIPTION_TOKEN
    assert got.records_token
    assert (got.decision.token_uid, got.decision.token_issued_at) == ("t-1", int(NOW) - 5)
    assert got.result(NOW) == {"expires": True, "ttl": 3600, "data": b'{"a":1}'}


def test_plan_is_frozen() -> None:
    got = plan(OPEN, {"channel": "ns:c"})
    with pytest.raises(AttributeError):
        got.recover = True  # type: ignore[misc]


def pub(offset: int = 0, epoch: str = "e1") -> Publication:
    return Publication("ns:c", b"{}", offset, epoch if offset else "")


HELD = [
    pytest.param([], 5, [], 5, id="nothing-held"),
    pytest.param([pub(6), pub(7)], 5, [6, 7], 7, id="after-the-position"),
    pytest.param([pub(4), pub(5), pub(6)], 5, [6], 6, id="at-or-below-the-position-dropped"),
    pytest.param([pub(6, "e0"), pub(7, "e0"), pub(6)], 5, [6], 6, id="superseded-epoch-dropped"),
    pytest.param([pub(7), pub(7)], 5, [7], 7, id="duplicate-dropped"),
    pytest.param([pub(), pub()], 5, [0, 0], 5, id="without-offset-always-pass"),
]


@pytest.mark.parametrize(("held", "top", "offsets", "last"), HELD)
def test_held_publications_to_deliver(
    held: list[Publication], top: int, offsets: list[int], last: int
) -> None:
    live, got_last = held_to_deliver(held, "e1", top)
    assert [publication.offset for publication in live] == offsets
    assert got_last == last
