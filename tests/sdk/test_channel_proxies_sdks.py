"""The official SDKs with subscribe, publish and sub_refresh proxies: what an application sees.

The backend grants subscriptions (with data), rewrites publications, refuses one channel for good and
lets one subscription expire through the sub_refresh proxy, after which the SDK subscribes again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.common import PROTOCOLS, SHARDS, connection_token, run, unique
from tests.sdk.scenarios import connected, open_client, subscribed
from tests.support.backend import Backend
from tests.support.server import Server

SUBSCRIBES: dict[str, int] = {}


def answer(path: str, body: Any) -> dict[str, Any]:
    channel = str(body.get("channel", ""))
    if path == "/subscribe":
        SUBSCRIBES[channel] = SUBSCRIBES.get(channel, 0) + 1
        if "deny" in channel:
            return {"error": {"code": 1403, "message": "not yours"}}
        if "short" in channel:
            return {"result": {"expire_at": int(time.time()) + 1}}
        return {"result": {"info": {"by": "backend"}}}
    if path == "/sub_refresh":
        return {"result": {"expired": True}}
    if path == "/publish":
        return {"result": {"data": {"checked": body.get("data", body.get("b64data"))}}}
    return {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Backend(answer) as backend:
        extra = {
            "proxy_subscribe_endpoint": backend.url("/subscribe"),
            "proxy_publish_endpoint": backend.url("/publish"),
            "proxy_sub_refresh_endpoint": backend.url("/sub_refresh"),
            "namespaces": [
                {"name": "px", "proxy_subscribe": True, "proxy_publish": True, "proxy_sub_refresh": True}
            ],
        }
        with Server(tmp_path_factory.mktemp("sdk-channel-proxies"), shards=SHARDS, **extra) as srv:
            yield srv


@pytest.fixture(params=["js", "python"])
def sdk(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_backend_decides_subscriptions_and_publications(server: Server, sdk: str, protocol: str) -> None:
    async def scenario() -> None:
        user = unique(f"{sdk}-px")
        room, denied, short = unique("px:room"), unique("px:deny"), unique("px:short")
        async with contextlib.AsyncExitStack() as stack:
            client = await open_client(stack, sdk, server, "proxied", protocol, connection_token(user))
            await connected(client)
            await client.subscribe(room)
            await subscribed(client, room)
            await client.publish(room, {"text": "hi"})
            publication = await client.log.wait("publication", channel=room)
            assert publication["data"] == {"checked": {"text": "hi"}}, publication
            # A refusal with an application code ends that subscription, not the connection.
            await client.subscribe(denied)
            unsubscribed = await client.log.wait("unsubscribed", channel=denied)
            assert unsubscribed["code"] == 1403, unsubscribed
            # The sub_refresh proxy lets this one expire (2501): the SDK subscribes again, and the
            # subscribe proxy decides again.
            await client.subscribe(short)
            first = await client.log.wait("subscribed", channel=short)
            start = client.log.events.index(first) + 1
            await client.log.wait("subscribing", channel=short, code=2501, start=start, timeout=10)
            await client.log.wait("subscribed", channel=short, start=start, timeout=10)
            assert SUBSCRIBES[short] >= 2
            assert not client.log.all("disconnected")

    run(scenario(), 60)
