"""The WebSocket upgrade (version, Origin, protocol choice, stale sockets), slow clients and the server
API's pushes to WebSocket connections, over real processes (router + 2 shards)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.integration.wsclient import (
    RawWs,
    WsClient,
    api,
    pub_data,
    raw_upgrade,
    run,
    upgrade_status,
    users_on_shards,
)
from tests.support.server import Server
from tests.support.tokens import API_KEY, make_token
from tests.support.waiting import eventually_async

CONFIG = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_client": True,
    "allowed_origins": ["http://good.example", "http://*.glob.example"],
    "client_stale_close_delay": "1s",
    "client_queue_max_size": 65536,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("ws-upgrade"), shards=2, **CONFIG) as srv:
        yield srv


async def subscriber_pair(server: Server, prefix: str, channel: str) -> list[WsClient]:
    clients = []
    for user in users_on_shards(f"{prefix}-{uuid.uuid4().hex[:4]}"):
        client = await WsClient.connected(server.port, make_token(user))
        assert "subscribe" in await client.subscribe(channel)
        clients.append(client)
    return clients


# -- the upgrade ------------------------------------------------------------------------------------


def test_wrong_websocket_version_is_426(server: Server) -> None:
    status, headers = raw_upgrade(server.port, headers={"Sec-WebSocket-Version": "8"})
    assert status == 426
    # RFC 6455 4.2.2: the refusal names the version the server speaks.
    assert headers.get("sec-websocket-version") == "13", headers
    status, _ = raw_upgrade(server.port)
    assert status == 101


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 101),
        ("http://good.example", 101),
        ("http://GOOD.example", 101),
        ("http://chat.glob.example", 101),
        ("http://evil.example", 403),
        ("http://good.example.evil.test", 403),
        ("https://good.example", 403),
        ("null", 403),
    ],
)
def test_origin_is_checked_against_allowed_origins(server: Server, origin: str | None, status: int) -> None:
    assert run(upgrade_status(server.port, origin=origin)) == status


@pytest.mark.parametrize(
    ("query", "subprotocols", "protocol"),
    [
        ("", None, "json"),
        ("", ["centrifuge-json"], "json"),
        ("", ["centrifuge-protobuf"], "protobuf"),
        ("?format=protobuf", None, "protobuf"),
        ("?cf_protocol=protobuf", None, "protobuf"),
    ],
)
def test_protocol_selection_and_connections_api(
    server: Server, query: str, subprotocols: list[str] | None, protocol: str
) -> None:
    async def scenario() -> None:
        users = users_on_shards(f"proto-{uuid.uuid4().hex[:4]}")
        for user in users:
            client = await WsClient.open(server.port, protocol, query=query, subprotocols=subprotocols)
            if subprotocols:
                assert client.ws.subprotocol == subprotocols[0]
            reply = await client.connect(make_token(user), name="raw-ws", version="1.2.3")
            assert "connect" in reply, reply
            result = reply["connect"]
            assert result["client"] and result["version"]
            assert result["ping"] == 25 and result["pong"] is True
            frames = client.frames
            assert isinstance(frames[0], bytes if protocol == "protobuf" else str), frames[0]
            connections = await asyncio.to_thread(server.connections, user=user)
            assert set(connections) == {result["client"]}, connections
            info = connections[result["client"]]
            assert info["transport"] == "websocket", info
            assert info["protocol"] == protocol, info
            assert info["app_name"] == "raw-ws" and info["app_version"] == "1.2.3", info
            assert info["user"] == user
            channel = f"sel-{uuid.uuid4().hex[:6]}"
            assert "subscribe" in await client.subscribe(channel)
            await api(server, "publish", {"channel": channel, "data": {"n": 1}})
            push = await client.push("pub", channel)
            assert pub_data(client, push["pub"]["data"]) == {"n": 1}
            await client.close()

    run(scenario())


def test_silent_upgraded_socket_is_closed_as_stale(server: Server) -> None:
    async def scenario() -> None:
        healthy = await subscriber_pair(server, "stale-ok", "stale-ok")
        started = time.monotonic()
        silent = await WsClient.open(server.port)
        code, reason = await silent.closed(5)
        elapsed = time.monotonic() - started
        assert code == 3502, (code, reason)
        assert 0.8 <= elapsed <= 4, elapsed
        await asyncio.sleep(0.5)  # longer than the stale delay since the healthy ones connected
        await api(server, "publish", {"channel": "stale-ok", "data": {"still": "here"}})
        for client in healthy:
            assert (await client.push("pub", "stale-ok"))["pub"]["data"] == {"still": "here"}
            await client.close()

    run(scenario())


# -- slow clients -----------------------------------------------------------------------------------

SLOW_PUBLICATIONS = 400
SLOW_SIZE = 16000


def test_client_that_stops_reading_is_cut_and_others_keep_receiving(server: Server) -> None:
    channel = f"slow-{uuid.uuid4().hex[:6]}"
    slow_user = f"slow-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        slow = await asyncio.to_thread(RawWs, server.port)
        slow.send_text(f'{{"id":1,"connect":{{"token":"{make_token(slow_user)}"}}}}')
        assert "connect" in slow.read_json()[0]
        slow.send_text(f'{{"id":2,"subscribe":{{"channel":"{channel}"}}}}')
        assert "subscribe" in slow.read_json()[0]
        assert len(server.connections(user=slow_user)) == 1
        normal = await subscriber_pair(server, "fast", channel)
        blob = "x" * SLOW_SIZE

        def publish_all() -> None:
            for n in range(SLOW_PUBLICATIONS):
                server.api("publish", {"channel": channel, "data": {"n": n, "blob": blob}})

        publishing = asyncio.create_task(asyncio.to_thread(publish_all))
        for client in normal:
            got = await client.publications(channel, SLOW_PUBLICATIONS, timeout=30)
            assert [d["n"] for d in got] == list(range(SLOW_PUBLICATIONS))
            assert client.is_open
        await publishing
        await eventually_async(
            lambda: server.connections(user=slow_user), until=lambda c: c == {}, what="the slow client cut"
        )

        # Whatever was buffered, then either a 3008 close frame or the end of the stream.
        ending = await asyncio.to_thread(slow.ending)
        assert ending in ("close 3008", "eof", "reset"), ending
        slow.close()
        for client in normal:
            await client.close()

    run(scenario(), 60)


# -- server API pushes ------------------------------------------------------------------------------


def test_api_subscribe_and_unsubscribe_push_to_websocket_clients(server: Server) -> None:
    async def scenario() -> None:
        for user in users_on_shards(f"apisub-{uuid.uuid4().hex[:4]}"):
            for protocol in ("json", "protobuf"):
                client = await WsClient.connected(server.port, make_token(user), protocol)
                control = f"ctl-{uuid.uuid4().hex[:6]}"
                assert "subscribe" in await client.subscribe(control)
                channel = f"srv-{uuid.uuid4().hex[:6]}"
                reply = await api(server, "subscribe", {"user": user, "channel": channel})
                assert reply == {"result": {}}, reply
                push = await client.push("subscribe", channel)
                assert push["channel"] == channel
                await api(server, "publish", {"channel": channel, "data": {"k": "server-side"}})
                push = await client.push("pub", channel)
                assert pub_data(client, push["pub"]["data"]) == {"k": "server-side"}
                connections = await asyncio.to_thread(server.connections, user=user)
                assert channel in connections[client.connect_result["client"]]["state"]["channels"]

                reply = await api(server, "unsubscribe", {"user": user, "channel": channel})
                assert reply == {"result": {}}, reply
                push = await client.push("unsubscribe", channel)
                assert push["unsubscribe"]["code"] == 2000, push
                assert push["unsubscribe"].get("reason") == "server unsubscribe", push
                await api(server, "publish", {"channel": channel, "data": {"k": "too late"}})
                await api(server, "publish", {"channel": control, "data": {"k": "marker"}})
                await client.push("pub", control)
                # The point: no publication of the left channel arrives meanwhile.
                await asyncio.sleep(0.2)
                leaked = [m for m in client.inbox if m.get("push", {}).get("channel") == channel]
                assert not leaked, leaked
                assert client.is_open
                await client.close()

    run(scenario())


def test_api_refresh_pushes_refresh_and_expired_closes_with_3005(server: Server) -> None:
    async def scenario() -> None:
        for user in users_on_shards(f"apiref-{uuid.uuid4().hex[:4]}"):
            client = await WsClient.connected(server.port, make_token(user))
            other = await WsClient.connected(server.port, make_token(f"{user}-other"))
            expire_at = int(time.time()) + 600
            reply = await api(server, "refresh", {"user": user, "expire_at": expire_at})
            assert reply == {"result": {}}, reply
            push = await client.push("refresh")
            assert push["refresh"]["expires"] is True, push
            assert 590 <= push["refresh"]["ttl"] <= 600, push

            reply = await api(server, "refresh", {"user": user, "expired": True})
            assert reply == {"result": {}}, reply
            code, reason = await client.closed(5)
            assert code == 3005, (code, reason)
            assert reason == "connection expired", reason
            assert other.is_open
            assert (await other.command("subscribe", {"channel": "x"}))["subscribe"] == {}
            await other.close()

    run(scenario())


def test_close_is_answered_and_connection_leaves_indexes(server: Server) -> None:
    async def scenario() -> None:
        user = f"bye-{uuid.uuid4().hex[:6]}"
        client = await WsClient.connected(server.port, make_token(user))
        assert len(server.connections(user=user)) == 1
        await client.ws.close(1000, "bye")
        assert client.ws.close_code == 1000  # the server echoed our close frame
        await eventually_async(
            lambda: server.connections(user=user), until=lambda c: c == {}, what="the connection unlisted"
        )
        with contextlib.suppress(Exception):
            await client.close()

    run(scenario())


def test_api_disconnect_closes_websockets_with_the_given_code(server: Server) -> None:
    async def scenario() -> None:
        for user in users_on_shards(f"apidis-{uuid.uuid4().hex[:4]}"):
            default = await WsClient.connected(server.port, make_token(user), "protobuf")
            assert await api(server, "disconnect", {"user": user}) == {"result": {}}
            assert await default.closed(5) == (3503, "force disconnect")
            custom = await WsClient.connected(server.port, make_token(user))
            kept = await WsClient.connected(server.port, make_token(user))
            params = {
                "user": user,
                "whitelist": [kept.connect_result["client"]],
                "disconnect": {"code": 4501, "reason": "banned"},
            }
            assert await api(server, "disconnect", params) == {"result": {}}
            assert await custom.closed(5) == (4501, "banned")
            await asyncio.sleep(0.2)  # the point: the whitelisted connection stays open meanwhile
            assert kept.is_open
            assert set(server.connections(user=user)) == {kept.connect_result["client"]}
            await kept.close()

    run(scenario())


def test_api_json_with_newlines_reaches_json_clients_as_one_line(server: Server) -> None:
    channel = f"lines-{uuid.uuid4().hex[:6]}"
    body = (
        b'{"channel": "%s",\n "data": {\n  "text": "two\\nlines",\n  "list": [1,\n 2]\n}\n}'
        % channel.encode()
    )

    async def scenario() -> None:
        clients = await subscriber_pair(server, "lines", channel)
        response = await asyncio.to_thread(
            requests.post,
            f"{server.url}/api/publish",
            data=body,
            headers={"X-API-Key": API_KEY},
            timeout=5,
        )
        assert response.json() == {"result": {}}, response.text
        for client in clients:
            push = await client.push("pub", channel)
            assert push["pub"]["data"] == {"text": "two\nlines", "list": [1, 2]}
            frame = next(f for f in client.frames if isinstance(f, str) and channel in f and '"pub"' in f)
            assert "\n" not in frame.strip(), f"raw newline inside a JSON message: {frame!r}"
            await client.close()

    run(scenario())


def test_api_binary_b64data_reaches_protobuf_and_closes_json_with_3506(server: Server) -> None:
    channel = f"b64-{uuid.uuid4().hex[:6]}"
    payload = b"\xff\x00not json\x80"

    async def scenario() -> None:
        json_clients = await subscriber_pair(server, "b64j", channel)
        pb_clients = []
        for user in users_on_shards(f"b64p-{uuid.uuid4().hex[:4]}"):
            client = await WsClient.connected(server.port, make_token(user), "protobuf")
            assert "subscribe" in await client.subscribe(channel)
            pb_clients.append(client)
        params = {"channel": channel, "b64data": base64.b64encode(payload).decode()}
        assert await api(server, "publish", params) == {"result": {}}
        for client in pb_clients:
            assert (await client.push("pub", channel))["pub"]["data"] == payload
            await client.close()
        for client in json_clients:
            code, reason = await client.closed(5)
            assert code == 3506, (code, reason)

    run(scenario())


def test_abruptly_dropped_sockets_leave_and_harm_nobody(server: Server) -> None:
    prefix = f"drop-{uuid.uuid4().hex[:4]}"
    channel = f"drop-{uuid.uuid4().hex[:6]}"

    def drop(user: str, subscribe: bool) -> None:
        raw = RawWs(server.port, None)
        raw.send_text(f'{{"id":1,"connect":{{"token":"{make_token(user)}"}}}}')
        if subscribe:
            raw.read_json()
            raw.send_text(f'{{"id":2,"subscribe":{{"channel":"{channel}"}}}}')
            raw.read_json()
        # Reset instead of a close handshake (SO_LINGER 0).
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()

    async def scenario() -> None:
        healthy = await subscriber_pair(server, "drop-ok", channel)
        users = [f"{prefix}-{n}" for n in range(20)]
        await asyncio.gather(*(asyncio.to_thread(drop, u, n % 2 == 0) for n, u in enumerate(users)))
        for n in range(5):
            await api(server, "publish", {"channel": channel, "data": {"n": n}})
        for client in healthy:
            assert [d["n"] for d in await client.publications(channel, 5)] == list(range(5))
        await eventually_async(
            lambda: server.connections(expression=f'user.startsWith("{prefix}")'),
            until=lambda left: not left,
            what="the dropped connections unlisted",
        )
        for client in healthy:
            await client.close()

    run(scenario())
