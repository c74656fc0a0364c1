"""Subscribe, publish, sub_refresh and refresh proxies against a real HTTP backend, on two shards.

The backend decides by channel (subscribe, publish, sub_refresh) or by user (connect, refresh); every
failure mode (error, disconnect, slower than the timeout, 500, not JSON) is one channel or one user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.wsclient import WsClient, api, run
from tests.support.backend import Backend, Reply
from tests.support.server import Server
from tests.support.tokens import make_token

FAILURES: dict[str, dict[str, Any] | Reply] = {
    "deny": {"error": {"code": 1403, "message": "not yours"}},
    "bye": {"disconnect": {"code": 4501, "reason": "banned"}},
    "slow": Reply(delay=2.0),
    "500": Reply(status=500),
    "garbage": Reply(body=b"{not json"),
}
# How many times the sub_refresh proxy was asked about each channel.
SUB_REFRESHES: dict[str, int] = {}


def answer(path: str, body: Any) -> dict[str, Any] | Reply:
    channel = str(body.get("channel", ""))
    case = channel.split(":", 1)[-1].split("-", 1)[0]
    if path == "/connect":
        user = str((body.get("data") or {}).get("user", ""))
        return {"result": {"user": user, "expire_at": int(time.time()) + 2, "meta": {"n": 0}}}
    if path == "/refresh":
        user = str(body.get("user"))
        if user.startswith("extend"):
            meta = body.get("meta") or {}
            return {"result": {"expire_at": int(time.time()) + 2, "meta": {"n": meta.get("n", 0) + 1}}}
        if user.startswith("expire"):
            return {"result": {"expired": True}}
        if user.startswith("kick"):
            return {"disconnect": {"code": 4503, "reason": "kicked"}}
        return Reply(status=500)  # failing backend: the connection must live on
    if case in FAILURES:
        return FAILURES[case]
    if path == "/subscribe":
        if case == "short":
            return {"result": {"expire_at": int(time.time()) + 1, "info": {"v": 1}}}
        return {
            "result": {
                "info": {"role": "mod", "user": body["user"]},
                "data": {"welcome": body["user"]},
                "override": {"presence": {"value": True}},
            }
        }
    if path == "/sub_refresh":
        SUB_REFRESHES[channel] = SUB_REFRESHES.get(channel, 0) + 1
        if SUB_REFRESHES[channel] >= 2:
            return {"result": {"expired": True}}
        return {"result": {"expire_at": int(time.time()) + 1}}
    if path == "/publish":
        if case == "skip":
            return {"result": {"skip_history": True}}
        return {"result": {"data": {"text": "checked", "by": body["user"], "was": body.get("data")}}}
    return Reply(status=404)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend(answer) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    extra = {
        "proxy_connect_endpoint": backend.url("/connect"),
        "proxy_refresh_endpoint": backend.url("/refresh"),
        "proxy_subscribe_endpoint": backend.url("/subscribe"),
        "proxy_publish_endpoint": backend.url("/publish"),
        "proxy_sub_refresh_endpoint": backend.url("/sub_refresh"),
        **{f"proxy_{kind}_timeout": "0.5s" for kind in ("connect", "refresh", "subscribe", "publish")},
        "proxy_include_connection_meta": True,
        "proxy_http_headers": ["X-Request-Id"],
        "proxy_emulated_headers": ["X-App"],
        "proxy_static_http_headers": {"X-Static": "sb"},
        "namespaces": [
            {
                "name": "px",
                "proxy_subscribe": True,
                "proxy_publish": True,
                "proxy_sub_refresh": True,
                "presence": True,
                "history_size": 10,
                "history_ttl": "60s",
                "allow_history_for_subscriber": True,
                "allow_presence_for_subscriber": True,
            }
        ],
    }
    with Server(tmp_path_factory.mktemp("channel-proxies"), shards=2, **extra) as srv:
        yield srv


def last(backend: Backend, path: str, **fields: Any) -> Any:
    found = [s for s in backend.seen if s.path == path and all(s.body.get(k) == v for k, v in fields.items())]
    assert found, (path, fields)
    return found[-1]


def test_subscribe_granted_by_the_backend_with_info_data_and_overrides(
    server: Server, backend: Backend
) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(
            server.port, make_token("sp-ann", meta={"tier": 2}), headers={"X-Request-Id": "r-1"}
        )
        reply = await client.subscribe("px:room")
        assert reply["subscribe"]["data"] == {"welcome": "sp-ann"}, reply
        seen = last(backend, "/subscribe", channel="px:room", user="sp-ann")
        assert seen.body["meta"] == {"tier": 2} and seen.body["transport"] == "websocket"
        assert seen.headers["x-request-id"] == "r-1" and seen.headers["x-static"] == "sb"
        # The channel info the backend gave reaches presence.
        presence = await client.command("presence", {"channel": "px:room"})
        (info,) = presence["presence"]["presence"].values()
        assert info["user"] == "sp-ann" and info["chan_info"] == {"role": "mod", "user": "sp-ann"}
        # The connections API reports the subscription's source: the subscribe proxy (4).
        found = (await api(server, "connections", {"user": "sp-ann"}))["result"]
        (conn,) = found["connections"].values()
        assert conn["state"]["channels"]["px:room"] == {"source": 4}
        await client.close()

    run(scenario())


@pytest.mark.parametrize(("case", "code"), [("deny", 1403), ("slow", 100), ("500", 100), ("garbage", 100)])
def test_subscribe_refusals_and_failures_answer_that_subscribe_only(
    server: Server, case: str, code: int
) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token(f"sp-{case}"))
        reply = await client.subscribe(f"px:{case}")
        assert reply["error"]["code"] == code, reply
        # The connection goes on, and another channel still works.
        assert "subscribe" in await client.subscribe("px:after")
        await client.close()

    run(scenario())


def test_subscribe_proxy_disconnect_closes_the_connection(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("sp-bye"))
        await client.send_commands({"id": client.next_id(), "subscribe": {"channel": "px:bye"}})
        assert await client.closed() == (4501, "banned")

    run(scenario())


def test_publish_proxy_replaces_data_and_may_skip_history(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("pp-bob"))
        assert "subscribe" in await client.subscribe("px:news")
        assert "publish" in await client.publish("px:news", {"text": "raw"})
        (data,) = await client.publications("px:news", 1)
        assert data == {"text": "checked", "by": "pp-bob", "was": {"text": "raw"}}
        history = (await api(server, "history", {"channel": "px:news", "limit": 10}))["result"]
        assert [p["data"] for p in history["publications"]] == [data]
        # skip_history: delivered, not stored.
        assert "subscribe" in await client.subscribe("px:skip")
        assert "publish" in await client.publish("px:skip", {"text": "ephemeral"})
        (delivered,) = await client.publications("px:skip", 1)
        assert delivered == {"text": "ephemeral"}
        history = (await api(server, "history", {"channel": "px:skip", "limit": 10}))["result"]
        assert history.get("publications", []) == []
        # Refusals and failures answer the publish only; nothing is published.
        assert (await client.publish("px:deny", {"t": 1}))["error"]["code"] == 1403
        for failing in ("px:500", "px:slow", "px:garbage"):
            assert (await client.publish(failing, {"t": 1}))["error"]["code"] == 100
        history = (await api(server, "history", {"channel": "px:500", "limit": 10}))["result"]
        assert history.get("publications", []) == []
        await client.send_commands(
            {"id": client.next_id(), "publish": {"channel": "px:bye", "data": {"t": 1}}}
        )
        assert await client.closed() == (4501, "banned")

    run(scenario())


def test_sub_refresh_proxy_prolongs_then_expires_a_subscription(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("sr-cat"))
        reply = await client.subscribe("px:short")
        assert "expires" not in reply["subscribe"], reply  # the server refreshes it, not the client
        # Asked once (prolonged), then again (expired): unsubscribe 2501, the SDK would subscribe again.
        push = await client.push("unsubscribe", "px:short", timeout=8)
        assert push["unsubscribe"]["code"] == 2501
        assert SUB_REFRESHES["px:short"] == 2
        seen = last(backend, "/sub_refresh", channel="px:short")
        assert seen.body["user"] == "sr-cat" and "token" not in seen.body
        assert client.is_open
        await client.close()

    run(scenario())


def refreshes_of(backend: Backend, user: str) -> list[Any]:
    return [s for s in backend.seen if s.path == "/refresh" and s.body.get("user") == user]


def test_refresh_proxy_prolongs_connections_of_the_connect_proxy(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        extend = await WsClient.open(server.port)
        result = (await extend.connect("", data={"user": "extend-1"}))["connect"]
        assert "expires" not in result and "ttl" not in result  # the server refreshes, not the client
        expire = await WsClient.open(server.port)
        assert "connect" in await expire.connect("", data={"user": "expire-1"})
        failing = await WsClient.open(server.port)
        assert "connect" in await failing.connect("", data={"user": "failing-1"})
        kicked = await WsClient.open(server.port)
        assert "connect" in await kicked.connect("", data={"user": "kick-1"})
        assert await expire.closed(timeout=8) == (3005, "connection expired")
        assert await kicked.closed(timeout=8) == (4503, "kicked")
        # Prolonged twice or more (every 2 s), with the meta the previous refresh answer set.
        deadline = time.monotonic() + 10
        refreshes = refreshes_of(backend, "extend-1")
        while len(refreshes) < 2:
            assert time.monotonic() < deadline, f"{len(refreshes)} refreshes of extend-1 within 10 s"
            await asyncio.sleep(0.1)
            refreshes = refreshes_of(backend, "extend-1")
        assert refreshes[-1].body["meta"]["n"] >= 1
        found = (await api(server, "connections", {"user": "extend-1"}))["result"]
        (conn,) = found["connections"].values()
        assert conn["state"]["meta"]["n"] >= 1
        # A backend that fails does not cut its clients: asked again later.
        assert extend.is_open and failing.is_open
        for client in (extend, failing):
            await client.close()

    run(scenario())


def test_later_proxy_calls_forward_only_allowed_headers(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client = await WsClient.open(server.port, headers={"X-Request-Id": "real-1", "X-App": "real-app"})
        emulated = {"X-App": "web", "X-Forwarded-For": "6.6.6.6", "X-Request-Id": "spoofed", "Cookie": "c"}
        assert "connect" in await client.connect(make_token("hdr-dan"), headers=emulated)
        assert "subscribe" in await client.subscribe("px:headers")
        seen = last(backend, "/subscribe", channel="px:headers", user="hdr-dan")
        # X-Request-Id comes from the real request (proxy_http_headers), never from the client's own
        # headers; X-App is allow-listed as an emulated header only, so the client's value passes;
        # client addresses and unlisted headers never do.
        assert seen.headers["x-request-id"] == "real-1"
        assert seen.headers["x-app"] == "web"
        assert "x-forwarded-for" not in seen.headers and "cookie" not in seen.headers
        await client.close()

    run(scenario())
