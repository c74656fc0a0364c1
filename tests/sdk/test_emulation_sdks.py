"""centrifuge-js over the emulation transports: http_stream and SSE, as a browser without WebSocket uses.

The client is given Centrifugo's transport list; with WebSocket disabled on the server (or listed
first and refused) it falls back to http_stream, or to SSE, and does what it does over WebSocket:
subscribe, receive, publish, history, presence, recovery after a reconnect, a server disconnect, a
token refresh. Its
commands travel by ``POST /emulation`` to the shard holding its session, across 2 shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk import scenarios
from tests.sdk.common import EXPIRED_CLOSE_DELAY, SHARDS, api, connection_token, run, unique
from tests.sdk.drivers import NodeClient
from tests.sdk.scenarios import numbers_received, publish_numbers, subscribed
from tests.support.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = {**scenarios.FEATURES_EXTRA, "http_stream": True, "sse": True, "websocket_disable": True}
    with Server(tmp_path_factory.mktemp("emulation"), shards=SHARDS, **extra) as srv:
        yield srv


def transports(server: Server, names: list[str]) -> dict[str, Any]:
    paths = {"websocket": "ws://{}/connection/websocket", "http_stream": "http://{}/connection/http_stream"}
    paths["sse"] = "http://{}/connection/sse"
    host = f"127.0.0.1:{server.port}"
    return {
        "url": "",
        "transports": [{"transport": name, "endpoint": paths[name].format(host)} for name in names],
        "emulation_endpoint": f"http://{host}/emulation",
    }


async def _everything_over(server: Server, names: list[str], protocol: str, expected: str) -> None:
    user = unique("emu")
    channel = unique("hist:emu")
    room = unique("room:emu")
    scenario = {**transports(server, names), "protocol": protocol, "token": connection_token(user)}
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(NodeClient("emulated", scenario))
        connected = await client.log.wait("connected")
        assert connected["transport"] == expected, connected
        found = await api(server, "connections", {"user": user})
        [info] = found["connections"].values()
        assert info["transport"] == expected and info["protocol"] == protocol, info

        await client.subscribe(channel, recoverable=True)
        first = await client.log.wait("subscribed", channel=channel, server_side=False)
        offsets = await publish_numbers(server, channel, range(3))
        received = await numbers_received(client, channel, 3)
        assert [p["offset"] for p in received] == offsets

        await client.publish(channel, {"n": 3})
        await numbers_received(client, channel, 4)
        history = await client.history(channel, limit=-1)
        assert [p["data"]["n"] for p in history["publications"]] == [0, 1, 2, 3]
        await client.subscribe(room)
        await subscribed(client, room)
        assert [e["user"] for e in (await client.presence(room)).values()] == [user]

        # Away and back: what was published meanwhile is recovered.
        await client.disconnect()
        gone = await client.log.wait("disconnected")
        after = client.log.events.index(gone) + 1
        offsets += await publish_numbers(server, channel, range(4, 8))
        await client.connect()
        again = await client.log.wait("subscribed", channel=channel, server_side=False, start=after)
        assert again["recovered"] is True and again["epoch"] == first["epoch"], again
        await numbers_received(client, channel, 8)

        # A server disconnect arrives as a push on the stream, with its code: 3503 ends the client, as
        # over WebSocket; 3011 ("force reconnect") makes it come back.
        await api(server, "disconnect", {"user": user, "disconnect": {"code": 3011, "reason": "go again"}})
        coming = await client.log.wait("connecting", start=after, code=3011)
        await client.log.wait("connected", start=client.log.events.index(coming))
        await api(server, "disconnect", {"user": user})
        ended = await client.log.wait("disconnected", start=client.log.events.index(coming), code=3503)
        assert ended["reason"] == "force disconnect"


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_falls_back_to_http_stream_when_websocket_is_refused(server: Server, protocol: str) -> None:
    run(_everything_over(server, ["websocket", "http_stream"], protocol, "http_stream"), 90)


def test_falls_back_to_sse(server: Server) -> None:
    run(_everything_over(server, ["websocket", "sse"], "json", "sse"), 90)


def test_token_refresh_travels_by_emulation(server: Server) -> None:
    """A token that expires in ~3 s: centrifuge-js refreshes it over http_stream (the refresh command
    goes by /emulation) and the session outlives the first token."""

    async def scenario() -> None:
        user = unique("emu-refresh")
        lifetime = 3
        expires_at = time.time() + lifetime
        short = connection_token(user, ttl=lifetime)
        spec = {
            **transports(server, ["http_stream"]),
            "protocol": "json",
            "token": short,
            "refresh_tokens": [connection_token(user, ttl=3600)],
        }
        async with NodeClient("emulated-refresh", spec) as client:
            await client.log.wait("connected")
            await client.log.wait("get_token", timeout=lifetime + 10, n=1)
            await asyncio.sleep(max(0.0, expires_at + EXPIRED_CLOSE_DELAY + 2.0 - time.time()))
            assert not client.log.all("disconnected"), client.log.describe()
            assert len(client.log.all("connected")) == 1, client.log.describe()
            [info] = (await api(server, "connections", {"user": user}))["connections"].values()
            assert info["transport"] == "http_stream"

    run(scenario(), 60)
