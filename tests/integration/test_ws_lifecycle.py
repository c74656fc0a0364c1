"""WebSocket connection lifecycle over real processes: per-user limits, personal channels, token expiry,
server pings and pong timeouts, and shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest

from tests.integration.wsclient import (
    UNI_WS_PATH,
    WsClient,
    api,
    pub_data,
    run,
    upgrade_status,
    users_on_shards,
)
from tests.support.server import Server
from tests.support.tokens import make_token
from tests.support.waiting import eventually_async

CONFIG = {
    "allow_subscribe_for_client": True,
    "client_user_connection_limit": 2,
    "user_subscribe_to_personal": True,
    "client_expired_close_delay": "1s",
    "client_expired_sub_close_delay": "1s",
    "ping_interval": "2s",
    "pong_timeout": "1s",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("ws-life"), shards=2, **CONFIG) as srv:
        yield srv


def unique_users(prefix: str) -> list[str]:
    return users_on_shards(f"{prefix}-{uuid.uuid4().hex[:4]}")


def test_user_connection_limit_closes_the_extra_connection_with_3504(server: Server) -> None:
    async def scenario() -> None:
        for user in unique_users("limit"):
            first = await WsClient.connected(server.port, make_token(user))
            second = await WsClient.connected(server.port, make_token(user), "protobuf")
            third = await WsClient.open(server.port)
            await third.send_commands({"id": 1, "connect": {"token": make_token(user)}})
            code, reason = await third.closed(5)
            assert code == 3504, (code, reason, third.inbox)
            assert reason == "connection limit", reason
            # Other users of the same shard are not limited by this one.
            neighbours = [await WsClient.connected(server.port, make_token(f"{user}-n{k}")) for k in range(3)]
            assert all(n.is_open for n in neighbours)
            await api(server, "publish", {"channel": f"#{user}", "data": {"to": user}})
            for client in (first, second):
                push = await client.push("pub", f"#{user}")
                assert pub_data(client, push["pub"]["data"]) == {"to": user}
            assert len(server.connections(user=user)) == 2
            # A slot freed by a closed connection can be taken again.
            await first.close()
            await eventually_async(
                partial(server.connections, user=user), until=lambda c: len(c) == 1, what="the slot freed"
            )
            again = await WsClient.connected(server.port, make_token(user))
            for client in [second, again, *neighbours]:
                assert client.is_open
                await client.close()

    run(scenario())


def test_personal_channel_subscription(server: Server) -> None:
    async def scenario() -> None:
        for user in unique_users("personal"):
            for protocol in ("json", "protobuf"):
                client = await WsClient.connected(server.port, make_token(user), protocol)
                personal = f"#{user}"
                assert personal in client.connect_result.get("subs", {}), client.connect_result
                info = server.connections(user=user)[client.connect_result["client"]]
                assert info["state"]["channels"][personal] == {"source": 9}, info
                await api(server, "publish", {"channel": personal, "data": {"hello": user}})
                push = await client.push("pub", personal)
                assert pub_data(client, push["pub"]["data"]) == {"hello": user}
                await client.close()

    run(scenario())


def test_unrefreshed_subscription_token_unsubscribes_with_2501(server: Server) -> None:
    async def scenario() -> None:
        clients = []
        for user in unique_users("subexp"):
            client = await WsClient.connected(server.port, make_token(user))
            channel = f"$exp-{user}"
            reply = await client.subscribe(
                channel, token=make_token(user, channel=channel, exp=int(time.time()) + 2)
            )
            result = reply.get("subscribe")
            assert result is not None, reply
            assert result.get("expires") is True and 0 < result.get("ttl", 0) <= 2, reply
            clients.append((user, channel, client, time.monotonic()))
        for user, channel, client, started in clients:
            push = await client.push("unsubscribe", channel, timeout=8)
            assert push["unsubscribe"]["code"] == 2501, push
            assert push["unsubscribe"].get("reason") == "subscription expired", push
            assert time.monotonic() - started >= 1.5
            assert client.is_open
            connections = server.connections(user=user)
            assert channel not in connections[client.connect_result["client"]]["state"]["channels"]
            # The connection itself goes on.
            await api(server, "publish", {"channel": f"#{user}", "data": {"alive": True}})
            assert (await client.push("pub", f"#{user}"))["pub"]["data"] == {"alive": True}
            await client.close()

    run(scenario())


def test_unrefreshed_connection_token_closes_with_3005(server: Server) -> None:
    async def scenario() -> None:
        clients = []
        for user in unique_users("connexp"):
            client = await WsClient.connected(server.port, make_token(user, exp=int(time.time()) + 2))
            result = client.connect_result
            assert result.get("expires") is True and 0 < result.get("ttl", 0) <= 2, result
            clients.append((client, time.monotonic()))
        long_lived = await WsClient.connected(server.port, make_token("connexp-long"))
        for client, started in clients:
            code, reason = await client.closed(8)
            assert code == 3005, (code, reason)
            assert reason == "connection expired", reason
            assert time.monotonic() - started >= 1.5
        assert long_lived.is_open
        await long_lived.close()

    run(scenario())


def test_extra_pongs_are_ignored(server: Server) -> None:
    """A pong with no ping outstanding (a ping answered twice, or an unprompted one) is not a violation."""

    async def scenario() -> None:
        clients = [
            await WsClient.connected(server.port, make_token(u), p)
            for u, p in zip(unique_users("extra"), ("json", "protobuf"), strict=True)
        ]
        for client in clients:
            await client.send_commands({})  # unprompted, right after the connect

        async def answered_twice() -> int:
            for client in clients:
                await client.send_commands({}, {})  # every ping answered (by the client) and more
            return min(c.pings for c in clients)

        await eventually_async(answered_twice, until=lambda pings: pings >= 2, timeout=6, what="two pings")
        for client in clients:
            assert client.pings >= 2, client.pings
            assert client.is_open, (client.close_code, client.close_reason)
            assert "subscribe" in await client.subscribe("after-pongs")
            await client.close()

    run(scenario())


def test_pings_answered_keep_the_connection_unanswered_close_with_3012(server: Server) -> None:
    async def scenario() -> None:
        answering = [
            await WsClient.connected(server.port, make_token(u), p)
            for u, p in zip(unique_users("pong"), ("json", "protobuf"), strict=True)
        ]
        silent = [
            await WsClient.connected(server.port, make_token(u), p, auto_pong=False)
            for u, p in zip(unique_users("nopong"), ("protobuf", "json"), strict=True)
        ]
        for client in answering + silent:
            assert client.connect_result.get("ping") == 2, client.connect_result
            assert client.connect_result.get("pong") is True, client.connect_result
        for client in silent:
            code, reason = await client.closed(8)
            assert code == 3012, (code, reason)
            assert reason == "no pong", reason
            assert client.pings >= 1
        await eventually_async(lambda: min(c.pings for c in answering) >= 2, timeout=6, what="two pings")
        for client in answering:
            assert client.pings >= 2, client.pings
            assert client.is_open
        # A protobuf ping is a zero-length Reply: one 0x00 byte.
        assert b"\x00" in answering[1].frames, answering[1].frames
        # A JSON ping is an empty object.
        assert "{}" in answering[0].frames, answering[0].frames
        for client in answering:
            await client.close()

    run(scenario())


def test_origin_refused_when_allowed_origins_is_empty(server: Server) -> None:
    assert run(upgrade_status(server.port, origin="http://good.example")) == 403
    assert run(upgrade_status(server.port)) == 101


def test_sigterm_closes_every_websocket_with_3001(tmp_path: Path) -> None:
    srv = Server(tmp_path, shards=2, uni_websocket=True).start()
    try:

        async def scenario() -> None:
            clients = [
                await WsClient.connected(srv.port, make_token(u), p)
                for u in users_on_shards("term")
                for p in ("json", "protobuf")
            ]
            uni = []
            for user in users_on_shards("term-uni"):
                client = await WsClient.open(srv.port, path=UNI_WS_PATH)
                await client.ws.send(orjson.dumps({"token": make_token(user)}).decode())
                await client.wait_for(lambda m: "connect" in m, what="the connect push")
                uni.append(client)
            srv.signal(signal.SIGTERM)
            for client in clients + uni:
                code, reason = await client.closed(8)
                assert (code, reason) == (3001, "shutdown"), (code, reason, client.protocol)
            for client in uni:
                assert client.inbox == [{"disconnect": {"code": 3001, "reason": "shutdown"}}], client.inbox
            assert await asyncio.to_thread(srv.wait_exit, 10) == 0

        run(scenario())
    finally:
        srv.stop()
