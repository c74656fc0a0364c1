"""Proxy requests as Centrifugo sends them, and what each answer means."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broker.protocol.state import ConnectionState
from broker.proxy.events import (
    PublishGrant,
    RefreshGrant,
    Refusal,
    SubscribeGrant,
    parse_publish,
    parse_refresh,
    parse_subscribe,
    publish_request,
    refresh_request,
    subscribe_request,
)
from broker.proxy.fields import MalformedAnswer
from broker.proxy.table import ProxySpec


def state() -> ConnectionState:
    conn = ConnectionState("cid", "sid", "sse", "json", 0.0)
    conn.user = "42"
    conn.meta = {"plan": "gold"}
    return conn


def as_sent(body: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(body))


def test_requests_carry_the_common_fields_and_meta_only_when_asked() -> None:
    plain = ProxySpec("p", "http://x", 1.0)
    body = as_sent(subscribe_request(state(), plain, "ch", "tok", b'{"a":1}'))
    assert body == {
        "client": "cid",
        "transport": "sse",
        "protocol": "json",
        "encoding": "json",
        "user": "42",
        "channel": "ch",
        "token": "tok",
        "data": {"a": 1},
    }
    with_meta = ProxySpec("p", "http://x", 1.0, include_connection_meta=True, binary_encoding=True)
    body = as_sent(publish_request(state(), with_meta, "ch", b"\x00\x01"))
    assert body["meta"] == {"plan": "gold"} and body["b64data"] == "AAE=" and body["encoding"] == "binary"
    assert as_sent(refresh_request(state(), plain)) == {
        "client": "cid",
        "transport": "sse",
        "protocol": "json",
        "encoding": "json",
        "user": "42",
    }
    assert as_sent(refresh_request(state(), plain, "ch"))["channel"] == "ch"


def test_answers() -> None:
    grant = parse_subscribe(
        {
            "result": {
                "b64info": "e30=",
                "data": [1],
                "override": {"presence": {"value": False}},
                "expire_at": 5,
            }
        }
    )
    assert grant == SubscribeGrant(info=b"{}", data=b"[1]", override={"presence": False}, expire_at=5)
    assert parse_subscribe({}) == SubscribeGrant()
    assert parse_publish({"result": {"skip_history": True}}) == PublishGrant(skip_history=True)
    assert parse_refresh({"result": {"expired": True}}) == RefreshGrant(expired=True)
    refused = parse_publish({"error": {"code": 1000, "message": "no"}})
    assert isinstance(refused, Refusal) and refused.error is not None and refused.error.code == 1000
    bye = parse_refresh({"disconnect": {"code": 4500, "reason": "out"}})
    assert isinstance(bye, Refusal) and bye.disconnect is not None and bye.disconnect.code == 4500


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"result": 3},
        {"result": {"expire_at": "1"}},
        {"result": {"override": {"presence": True}}},
        {"result": {"b64data": "%%%"}},
        {"error": {"code": "x"}},
    ],
)
def test_malformed_answers(answer: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse_subscribe(answer)
