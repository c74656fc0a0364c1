"""uni_websocket over real processes (router + 2 shards), with the bidirectional endpoint turned off."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from tests.integration.wsclient import (
    UNI_WS_PATH,
    WS_PATH,
    WsClient,
    api,
    raw_upgrade,
    run,
    upgrade_status,
    users_on_shards,
)
from tests.support.server import Server
from tests.support.tokens import make_token

CONFIG = {"uni_websocket": True, "websocket_disable": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("ws-uni"), shards=2, **CONFIG) as srv:
        yield srv


async def uni_open(server: Server, body: dict) -> WsClient:
    client = await WsClient.open(server.port, path=UNI_WS_PATH)
    await client.ws.send(orjson.dumps(body).decode())
    return client


def test_websocket_disable_turns_the_bidirectional_endpoint_off(server: Server) -> None:
    status, _ = raw_upgrade(server.port, WS_PATH)
    assert status == 404
    assert run(upgrade_status(server.port, WS_PATH)) == 404
    status, _ = raw_upgrade(server.port, UNI_WS_PATH)
    assert status == 101


def test_connect_push_publications_and_disconnect(server: Server) -> None:
    async def scenario() -> None:
        for user in users_on_shards(f"uni-{uuid.uuid4().hex[:4]}"):
            channel = f"news-{user}"
            client = await uni_open(
                server,
                {"token": make_token(user, channels=[channel]), "name": "uni-app", "version": "0.9"},
            )
            first = await client.wait_for(lambda m: True, what="the connect push")
            assert set(first) == {"connect"}, first
            connect = first["connect"]
            assert connect["client"] and connect["version"], connect
            assert channel in connect.get("subs", {}), connect
            assert connect.get("ping") == 25, connect
            assert "pong" not in connect, connect
            assert isinstance(client.frames[0], str), client.frames[0]

            info = server.connections(user=user)[connect["client"]]
            assert info["transport"] == "uni_websocket", info
            assert info["protocol"] == "json", info
            assert info["app_name"] == "uni-app" and info["app_version"] == "0.9", info

            for n in range(3):
                await api(server, "publish", {"channel": channel, "data": {"n": n}})
            for n in range(3):
                push = await client.push("pub", channel)
                assert push == {"channel": channel, "pub": {"data": {"n": n}}}, push
            pub_frames = [f for f in client.frames if isinstance(f, str) and '"pub"' in f]
            assert len(pub_frames) == 3
            for frame in pub_frames:
                assert isinstance(orjson.loads(frame), dict), f"not one message per frame: {frame!r}"

            # Messages sent after the ConnectRequest are ignored.
            await client.ws.send("this is not json")
            await client.ws.send(b"\x00\x01", text=False)
            extra = f"extra-{user}"
            assert await api(server, "subscribe", {"user": user, "channel": extra}) == {"result": {}}
            push = await client.push("subscribe", extra)
            assert push["channel"] == extra and "subscribe" in push, push
            await api(server, "publish", {"channel": extra, "data": "text"})
            assert (await client.push("pub", extra))["pub"]["data"] == "text"

            assert await api(server, "disconnect", {"user": user}) == {"result": {}}
            code, reason = await client.closed(5)
            last = client.inbox[-1] if client.inbox else None
            assert last == {"disconnect": {"code": 3503, "reason": "force disconnect"}}, client.inbox
            assert (code, reason) == (3503, "force disconnect")

    run(scenario())


@pytest.mark.parametrize(
    ("claims", "code", "reason"),
    [
        ({"secret": "wrong-secret"}, 3500, "invalid token"),
        ({"exp": -10}, 3005, "connection expired"),
    ],
)
def test_refused_connect_is_a_disconnect_then_close(
    server: Server, claims: dict, code: int, reason: str
) -> None:
    async def scenario() -> None:
        healthy_user = f"uni-ok-{uuid.uuid4().hex[:4]}"
        healthy = await uni_open(server, {"token": make_token(healthy_user, channels=["uni-health"])})
        await healthy.wait_for(lambda m: "connect" in m, what="connect push")
        params = dict(claims)
        if "exp" in params:
            params["exp"] = int(time.time()) + params["exp"]
        for user in users_on_shards(f"uni-bad-{uuid.uuid4().hex[:4]}"):
            client = await uni_open(server, {"token": make_token(user, **params)})
            got = await client.closed(5)
            assert client.inbox == [{"disconnect": {"code": code, "reason": reason}}], client.inbox
            assert got == (code, reason)
        await api(server, "publish", {"channel": "uni-health", "data": {"ok": 1}})
        assert (await healthy.push("pub", "uni-health"))["pub"]["data"] == {"ok": 1}
        await healthy.close()

    run(scenario())
