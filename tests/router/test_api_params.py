"""Each API method's params: what is accepted, and the error each kind of bad input gets."""

from __future__ import annotations

from typing import Any

import pytest

from broker import errors
from broker.channels import ChannelRules
from broker.config import build
from router.api import params as p
from router.api.methods import METHODS, Route

RULES = ChannelRules.from_config(
    build({"token_hmac_secret_key": "x", "namespaces": [{"name": "ns"}]}, environ={})
)

BAD = errors.BAD_REQUEST.code
UNKNOWN_NAMESPACE = errors.UNKNOWN_CHANNEL.code
DEEP: Any = {}
for _ in range(20):
    DEEP = {"x": DEEP}


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        (p.PublishParams, {"channel": "a", "data": {"n": 1}}, {"channel": "a", "data": {"n": 1}}),
        (
            p.PublishParams,
            {"channel": "a", "b64data": "AA==", "tags": {"k": "v"}},
            {"channel": "a", "b64data": "AA==", "tags": {"k": "v"}},
        ),
        (
            p.PublishParams,
            {"channel": "a", "data": DEEP, "skip_history": True, "idempotency_key": "i"},
            {"channel": "a", "data": DEEP, "skip_history": True, "idempotency_key": "i"},
        ),
        (
            p.SubscribeParams,
            {"user": "u", "channel": "a", "expire_at": 10, "data": 1},
            {"user": "u", "channel": "a", "client": "", "session": "", "expire_at": 10, "data": 1},
        ),
        (
            p.UnsubscribeParams,
            {"user": "u", "channel": "a", "client": "c"},
            {"user": "u", "channel": "a", "client": "c", "session": ""},
        ),
        (
            p.RefreshParams,
            {"user": "u", "expire_at": 5, "info": {}},
            {"user": "u", "client": "", "session": "", "expired": False, "expire_at": 5, "info": {}},
        ),
        (
            p.HistoryParams,
            {"channel": "a", "limit": 3, "reverse": 1, "since": {"offset": 1}},
            {"channel": "a", "limit": 3, "reverse": True, "since": {"offset": 1}},
        ),
        (p.ChannelParams, {"channel": "ns:room"}, {"channel": "ns:room"}),
        (
            p.DisconnectParams,
            {"user": "u", "disconnect": {"code": 4000, "reason": "bye"}},
            {"user": "u", "disconnect": {"code": 4000, "reason": "bye"}},
        ),
    ],
)
def test_good_params_reach_the_shard_as_given(kind: Any, params: dict[str, Any], expected: dict[str, Any]):
    assert kind.from_json(params, RULES).to_shard() == expected


@pytest.mark.parametrize(
    ("kind", "params", "code", "message"),
    [
        (p.PublishParams, {"data": {}}, BAD, "channel required"),
        (p.PublishParams, {"channel": 5, "data": {}}, BAD, "channel must be a string"),
        (p.PublishParams, {"channel": "a"}, BAD, "data required"),
        (p.PublishParams, {"channel": "a", "b64data": 5}, BAD, "b64data must be a string"),
        (
            p.PublishParams,
            {"channel": "a", "data": 1, "tags": {"k": 1}},
            BAD,
            "tags must map strings to strings",
        ),
        (p.PublishParams, {"channel": "nope:x", "data": 1}, UNKNOWN_NAMESPACE, None),
        (p.BroadcastParams, {"channels": [], "data": 1}, BAD, "channels required"),
        (p.BroadcastParams, {"channels": ["a", 1], "data": 1}, BAD, "channels required"),
        (p.BroadcastParams, {"channels": ["a"]}, BAD, "data required"),
        (p.SubscribeParams, {"channel": "a"}, BAD, "user required"),
        (
            p.SubscribeParams,
            {"user": "u", "channel": "a", "expire_at": "soon"},
            BAD,
            "expire_at must be unix seconds",
        ),
        (
            p.SubscribeParams,
            {"user": "u", "channel": "a", "expire_at": True},
            BAD,
            "expire_at must be unix seconds",
        ),
        (p.UnsubscribeParams, {"user": "u"}, BAD, "channel required"),
        (p.UnsubscribeParams, {"user": "u", "channel": "a", "session": []}, BAD, "session must be a string"),
        (p.RefreshParams, {"user": "u", "expired": "yes"}, BAD, "expired must be a boolean"),
        (p.RefreshParams, {"user": "u", "expire_at": -1}, BAD, "expire_at must be unix seconds"),
        (p.DisconnectParams, {"user": "u", "whitelist": "c"}, BAD, "whitelist must be a list of client ids"),
        (p.DisconnectParams, {"user": "u", "disconnect": []}, BAD, "disconnect must be an object"),
        (
            p.DisconnectParams,
            {"user": "u", "disconnect": {"code": 1000}},
            BAD,
            "disconnect code must be within 3000..4999",
        ),
        (
            p.DisconnectParams,
            {"user": "u", "disconnect": {"code": 4000, "reason": "x" * 124}},
            BAD,
            "disconnect reason must be a string of at most 123 bytes",
        ),
        (p.HistoryParams, {"channel": "a", "limit": 1.5}, BAD, "limit must be an integer"),
        (p.HistoryParams, {"channel": "a", "since": 1}, BAD, "since must be an object"),
        (p.ChannelsParams, {"pattern": 1}, BAD, "pattern must be a string"),
        (p.ConnectionsParams, {}, BAD, "user, expression or label_filter required"),
        (p.ConnectionsParams, {"user": DEEP}, BAD, "user must be a string"),
        # v6 PRO targets by label: refused, never silently ignored.
        (
            p.ConnectionsParams,
            {"label_filter": {"key": "region", "cmp": "like", "val": "eu"}},
            BAD,
            "bad label_filter: unknown cmp 'like'",
        ),
        (p.ConnectionsParams, {"user": "u", "all_users": True}, BAD, "all_users is not supported yet"),
        (
            p.ConnectionsParams,
            {"user": "u", "sort": "user"},
            BAD,
            'sort must be "connected_at_ms" or "-connected_at_ms"',
        ),
        (p.ConnectionsParams, {"user": "u", "exclude_client": 5}, BAD, "exclude_client must be a string"),
        (p.DisconnectParams, {"user": "u", "all_users": True}, BAD, "user and all_users exclude each other"),
        (p.DisconnectParams, {"all_users": 1}, BAD, "all_users must be a boolean"),
        (p.RefreshParams, {}, BAD, "user required"),
        (
            p.SubscribeParams,
            {"user": "u", "channel": "a", "label_filter": {"op": "and"}},
            BAD,
            "bad label_filter: and needs nodes",
        ),
        (p.BatchParams, {"commands": {}}, BAD, "commands required"),
    ],
)
def test_bad_params_get_the_apis_error(kind: Any, params: dict[str, Any], code: int, message: str | None):
    with pytest.raises(errors.ClientError) as caught:
        kind.from_json(params, RULES)
    assert caught.value.code == code
    if message is not None:
        assert caught.value.message == message


def test_a_batch_command_names_exactly_one_method():
    batch = p.BatchParams.from_json({"commands": [{"publish": {}}, {"info": {}}], "parallel": True}, RULES)
    assert batch.methods() == [("publish", {}), ("info", {})] and batch.parallel
    with pytest.raises(errors.ClientError) as caught:
        p.BatchParams.from_json({"commands": [{"publish": {}, "info": {}}]}, RULES).methods()
    assert caught.value.message == "each command has exactly one method"


def test_the_method_table_routes_by_what_the_params_carry():
    for name, method in METHODS.items():
        assert hasattr(method.params, "from_json"), name
        if method.route is Route.USER:
            assert "user" in method.params.__dataclass_fields__, name
        elif method.route is Route.WRITER:
            assert "channel" in method.params.__dataclass_fields__, name
        else:
            assert method.handler is not None, name
    assert set(METHODS) >= {"publish", "broadcast", "connections", "batch", "info", "history"}
