"""The session core with proxies: subscribe, publish and rpc decided by the backend's answers.

The recording host keeps each proxy call (proxy name, request body, completion); a test answers it
by calling the completion with the backend's JSON (or None: the call failed).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broker.protocol.client import CLOSED, ClientSession
from broker.protocol.state import SOURCE_SUBSCRIBE_PROXY
from tests.test_protocol_client import NOW, Host, connected, send

BACKEND = "http://127.0.0.1:9"


def proxied_host(**extra: Any) -> Host:
    settings: dict[str, Any] = {
        "proxy_subscribe_endpoint": f"{BACKEND}/subscribe",
        "proxy_publish_endpoint": f"{BACKEND}/publish",
        "proxy_sub_refresh_endpoint": f"{BACKEND}/sub_refresh",
        "proxy_rpc_endpoint": f"{BACKEND}/rpc",
        "proxy_include_connection_meta": True,
        "namespaces": [
            {"name": "sp", "proxy_subscribe": True, "proxy_publish": True, "presence": True},
            {"name": "sr", "proxy_subscribe": True, "proxy_sub_refresh": True},
            {"name": "open", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
        ],
    }
    settings.update(extra)
    return Host(**settings)


def answer(host: Host, reply: Any, index: int = -1) -> tuple[str, dict[str, Any]]:
    name, body, done = host.proxy_calls[index]
    done(reply, NOW)
    return name, orjson.loads(orjson.dumps(body))  # as the backend reads it


def replies(session: ClientSession) -> list[dict[str, Any]]:
    out = session.data_to_send()
    return [orjson.loads(line) for line in out.split(b"\n") if line]


def test_subscribe_waits_for_the_proxy_and_applies_its_grant() -> None:
    host, session = connected(proxied_host(), user="7", meta={"plan": "gold"})
    assert send(session, {"id": 2, "subscribe": {"channel": "sp:room", "data": {"hello": 1}}}) == []
    assert host.subscribed == []  # nothing granted before the backend answers
    grant = {"info": {"role": "mod"}, "data": {"welcome": True}, "override": {"join_leave": {"value": True}}}
    name, body = answer(host, {"result": grant})
    assert name == "subscribe"
    assert body == {
        "client": "cid",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "user": "7",
        "meta": {"plan": "gold"},
        "channel": "sp:room",
        "data": {"hello": 1},
    }
    (reply,) = replies(session)
    assert reply == {"id": 2, "subscribe": {"data": {"welcome": True}}}
    assert host.subscribed == [("sp:room", SOURCE_SUBSCRIBE_PROXY)]
    assert session.state.chan_info == {"sp:room": b'{"role":"mod"}'}
    assert session.state.proxy_pending is None


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ({"error": {"code": 1403, "message": "not yours"}}, 1403),
        (None, 100),  # the call failed: timeout, refused, non-200
        ([1, 2], 100),  # not an object
        ({"result": {"expire_at": "soon"}}, 100),  # malformed
        ({"result": {"expire_at": int(NOW) - 1}}, 110),  # granted, but already over
    ],
)
def test_subscribe_refusals_and_failures_answer_that_command(reply: Any, code: int) -> None:
    host, session = connected(proxied_host())
    send(session, {"id": 2, "subscribe": {"channel": "sp:room"}})
    answer(host, reply)
    (out,) = replies(session)
    assert out["error"]["code"] == code
    assert host.subscribed == [] and session.status != CLOSED
    # The channel can be asked for again.
    send(session, {"id": 3, "subscribe": {"channel": "sp:room"}})
    assert len(host.proxy_calls) == 2


def test_subscribe_proxy_disconnect_ends_the_connection() -> None:
    host, session = connected(proxied_host())
    send(session, {"id": 2, "subscribe": {"channel": "sp:room"}})
    answer(host, {"disconnect": {"code": 4501, "reason": "banned"}})
    assert session.status == CLOSED and session.disconnect is not None
    assert (session.disconnect.code, session.disconnect.reason) == (4501, "banned")


def test_a_pending_subscribe_counts_and_an_unsubscribe_cancels_it() -> None:
    host, session = connected(proxied_host())
    send(session, {"id": 2, "subscribe": {"channel": "sp:room"}})
    (dup,) = send(session, {"id": 3, "subscribe": {"channel": "sp:room"}})
    assert dup["error"]["code"] == 105
    (unsub,) = send(session, {"id": 4, "unsubscribe": {"channel": "sp:room"}})
    assert unsub == {"id": 4, "unsubscribe": {}}
    answer(host, {"result": {}}, index=0)
    assert replies(session) == [] and host.subscribed == []


def test_token_and_open_namespaces_do_not_ask_the_proxy() -> None:
    host, session = connected(proxied_host())
    (reply,) = send(session, {"id": 2, "subscribe": {"channel": "open:x"}})
    assert "subscribe" in reply and host.proxy_calls == []


def test_sub_refresh_proxy_keeps_the_expiry_from_the_client() -> None:
    host, session = connected(proxied_host())
    send(session, {"id": 2, "subscribe": {"channel": "sr:x"}})
    answer(host, {"result": {"expire_at": int(NOW) + 30}})
    (reply,) = replies(session)
    assert reply == {"id": 2, "subscribe": {}}  # no expires/ttl: the server refreshes it
    assert session.state.sub_expires == {"sr:x": NOW + 30}
    # Without a sub_refresh proxy the client is told, and refreshes with a token.
    send(session, {"id": 3, "subscribe": {"channel": "sp:y"}})
    answer(host, {"result": {"expire_at": int(NOW) + 30}})
    (reply,) = replies(session)
    assert reply["subscribe"] == {"expires": True, "ttl": 30}


def test_publish_proxy_replaces_data_and_may_skip_history() -> None:
    host, session = connected(proxied_host(), user="7")
    assert send(session, {"id": 2, "publish": {"channel": "sp:room", "data": {"text": "hi"}}}) == []
    assert host.published == []
    name, body = answer(host, {"result": {"data": {"text": "HI"}, "skip_history": True}})
    assert name == "publish" and body["channel"] == "sp:room" and body["data"] == {"text": "hi"}
    (publication,) = host.published
    assert publication.data == b'{"text":"HI"}' and host.skipped_history == [True]
    host.pending_done[0](None, {})
    assert replies(session) == [{"id": 2, "publish": {}}]


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ({"error": {"code": 1000, "message": "spam"}}, 1000),
        (None, 100),
        ({"result": {"skip_history": 1}}, 100),
    ],
)
def test_publish_refusals_and_failures(reply: Any, code: int) -> None:
    host, session = connected(proxied_host())
    send(session, {"id": 2, "publish": {"channel": "sp:room", "data": {"text": "hi"}}})
    answer(host, reply)
    (out,) = replies(session)
    assert out["error"]["code"] == code and host.published == []


def test_publish_without_proxy_keeps_the_permission_rules() -> None:
    host, session = connected(proxied_host())
    send(session, {"id": 2, "publish": {"channel": "open:x", "data": {"a": 1}}})
    assert host.proxy_calls == [] and len(host.published) == 1 and host.skipped_history == [False]


def test_rpc_goes_to_the_rpc_proxy_with_meta() -> None:
    host, session = connected(proxied_host(), user="9", meta={"m": 1})
    send(session, {"id": 2, "rpc": {"method": "sum", "data": {"a": 1}}})
    name, body = answer(host, {"result": {"data": {"sum": 1}}})
    assert name == "rpc" and body["method"] == "sum" and body["meta"] == {"m": 1}
    assert replies(session) == [{"id": 2, "rpc": {"data": {"sum": 1}}}]


def granular_host() -> Host:
    return Host(
        granular_proxy_mode=True,
        proxies=[
            {"name": "main", "endpoint": f"{BACKEND}/main", "timeout": "2s"},
            {"name": "billing", "endpoint": f"{BACKEND}/billing", "include_connection_meta": True},
        ],
        rpc_proxy_name="main",
        rpc_namespaces=[{"name": "pay", "rpc_proxy_name": "billing"}, {"name": "none"}],
        namespaces=[{"name": "gr", "subscribe_proxy_name": "billing"}],
    )


def test_granular_mode_picks_the_proxy_by_namespace() -> None:
    host, session = connected(granular_host(), meta={"m": 2})
    send(session, {"id": 2, "rpc": {"method": "pay:charge"}})
    send(session, {"id": 3, "rpc": {"method": "stats"}})
    send(session, {"id": 4, "subscribe": {"channel": "gr:1"}})
    names = [name for name, _, _ in host.proxy_calls]
    assert names == ["billing", "main", "billing"]
    assert "meta" in host.proxy_calls[0][1] and "meta" not in host.proxy_calls[1][1]
    # An rpc namespace without a proxy has no handler.
    (reply,) = send(session, {"id": 5, "rpc": {"method": "none:x"}})
    assert reply["error"]["code"] == 108
