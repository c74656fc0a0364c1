"""Granular proxy mode against real backends: named proxies per namespace and RPC namespace, one of them
down (nothing listens on its port)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.wsclient import WsClient, run
from tests.support.backend import Backend, Reply
from tests.support.server import Server, free_port
from tests.support.tokens import make_token


def answer(path: str, body: Any) -> dict[str, Any] | Reply:
    if path == "/billing":
        return {"result": {"data": {"billed": body["user"], "meta": body.get("meta")}}}
    if path == "/main" and "method" in body:
        return {"result": {"data": {"main": body["method"]}}}
    if path == "/main":
        return {"result": {"data": {"channel": body["channel"]}}}
    return Reply(status=404)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend(answer) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    down = f"http://127.0.0.1:{free_port()}/down"
    extra = {
        "granular_proxy_mode": True,
        "proxies": [
            {"name": "main", "endpoint": backend.url("/main"), "timeout": "1s"},
            {"name": "billing", "endpoint": backend.url("/billing"), "include_connection_meta": True},
            {"name": "down", "endpoint": down, "timeout": "1s"},
        ],
        "rpc_proxy_name": "main",
        "rpc_namespaces": [
            {"name": "pay", "rpc_proxy_name": "billing"},
            {"name": "off", "rpc_proxy_name": "down"},
        ],
        "namespaces": [
            {"name": "room", "subscribe_proxy_name": "main"},
            {"name": "gone", "subscribe_proxy_name": "down", "publish_proxy_name": "down"},
        ],
    }
    with Server(tmp_path_factory.mktemp("granular-proxies"), shards=2, **extra) as srv:
        yield srv


def test_each_event_goes_to_its_named_proxy(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("gr-ann", meta={"card": "visa"}))
        charged = await client.command("rpc", {"method": "pay:charge", "data": {}})
        assert charged["rpc"]["data"] == {"billed": "gr-ann", "meta": {"card": "visa"}}
        plain = await client.command("rpc", {"method": "stats", "data": {}})
        assert plain["rpc"]["data"] == {"main": "stats"}
        assert "meta" not in [s for s in backend.seen if s.path == "/main"][-1].body
        reply = await client.subscribe("room:1")
        assert reply["subscribe"]["data"] == {"channel": "room:1"}, reply
        await client.close()

    run(scenario())


def test_a_backend_that_is_down_answers_100_and_nothing_else_changes(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("gr-bob"))
        assert (await client.subscribe("gone:1"))["error"]["code"] == 100
        assert (await client.publish("gone:1", {"x": 1}))["error"]["code"] == 100
        assert (await client.command("rpc", {"method": "off:x", "data": {}}))["error"]["code"] == 100
        # The same connection still reaches the live proxies.
        assert "subscribe" in await client.subscribe("room:2")
        assert client.is_open
        await client.close()

    run(scenario())
