"""Presence, join/leave, channels and batch across shards, with raw WebSocket clients and cent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cent import (
    BatchRequest,
    ChannelsRequest,
    Client,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
)

from broker.hashing import shard_for_user
from tests.support.server import Server
from tests.support.tokens import API_KEY, make_token

NAMESPACES = [
    {
        "name": "room",
        "presence": True,
        "join_leave": True,
        "allow_subscribe_for_client": True,
        "allow_presence_for_subscriber": True,
    },
    {"name": "forced", "join_leave": True, "force_push_join_leave": True, "allow_subscribe_for_client": True},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    extra = {"namespaces": NAMESPACES, "allow_subscribe_for_client": True}
    with Server(tmp_path_factory.mktemp("presence"), shards=2, **extra) as srv:
        yield srv


class Ws:
    """A JSON WebSocket client that keeps replies and pushes apart."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.next_id = 1
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        import websockets

        try:
            async for frame in self.conn:
                for line in frame.strip().split("\n"):
                    message = json.loads(line)
                    if message.get("id"):
                        self.replies[message["id"]].set_result(message)
                    elif "push" in message:
                        await self.pushes.put(message["push"])
                    elif message == {}:
                        await self.conn.send("{}")
        except websockets.ConnectionClosed:
            pass  # the tests look at what arrived before the end

    async def call(self, **command: Any) -> dict[str, Any]:
        command_id = self.next_id
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[command_id] = future
        await self.conn.send(json.dumps({"id": command_id, **command}))
        return await asyncio.wait_for(future, 5)

    async def push(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.pushes.get(), 5)

    async def close(self) -> None:
        await self.conn.close()
        self.reader.cancel()


async def connect(server: Server, user: str, **claims: Any) -> Ws:
    import websockets

    conn = await websockets.connect(f"ws://127.0.0.1:{server.port}/connection/websocket")
    client = Ws(conn)
    reply = await client.call(connect={"token": make_token(user, **claims)})
    assert "connect" in reply, reply
    client.client_id = reply["connect"]["client"]  # type: ignore[attr-defined]
    return client


def users_on_both_shards() -> tuple[str, str]:
    a = next(f"pa-{i}" for i in range(1000) if shard_for_user(f"pa-{i}", 2) == 0)
    b = next(f"pb-{i}" for i in range(1000) if shard_for_user(f"pb-{i}", 2) == 1)
    return a, b


def test_presence_join_leave_across_shards(server: Server) -> None:
    async def scenario() -> None:
        user_a, user_b = users_on_both_shards()
        a = await connect(server, user_a, info={"name": "Ann"})
        b = await connect(server, user_b)
        assert (await a.call(subscribe={"channel": "room:1", "join_leave": True}))["subscribe"] == {}
        assert await a.push() == {
            "channel": "room:1",
            "join": {"info": {"user": user_a, "client": a.client_id, "conn_info": {"name": "Ann"}}},
        }
        await b.call(subscribe={"channel": "room:1"})
        join = await a.push()
        assert join["join"]["info"]["user"] == user_b  # b's join, seen on a's shard
        presence = (await b.call(presence={"channel": "room:1"}))["presence"]["presence"]
        assert set(presence) == {a.client_id, b.client_id}
        assert presence[a.client_id] == {"user": user_a, "client": a.client_id, "conn_info": {"name": "Ann"}}
        stats = (await a.call(presence_stats={"channel": "room:1"}))["presence_stats"]
        assert stats == {"num_clients": 2, "num_users": 2}
        await b.close()
        leave = await a.push()
        assert leave == {"channel": "room:1", "leave": {"info": {"user": user_b, "client": b.client_id}}}
        denied = await a.call(presence={"channel": "chat"})
        assert denied["error"]["code"] == 108
        await a.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_forced_join_leave_reaches_everyone(server: Server) -> None:
    async def scenario() -> None:
        user_a, user_b = users_on_both_shards()
        a = await connect(server, user_a)
        b = await connect(server, user_b)
        await a.call(subscribe={"channel": "forced:x"})
        assert (await a.push())["join"]["info"]["user"] == user_a
        await b.call(subscribe={"channel": "forced:x"})
        assert (await a.push())["join"]["info"]["user"] == user_b
        await b.call(unsubscribe={"channel": "forced:x"})
        assert (await a.push())["leave"]["info"]["user"] == user_b
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_api_presence_channels_and_batch_with_cent(server: Server) -> None:
    async def scenario() -> None:
        user_a, user_b = users_on_both_shards()
        a = await connect(server, user_a)
        b = await connect(server, user_b)
        for client in (a, b):
            await client.call(subscribe={"channel": "room:api"})
            await client.call(subscribe={"channel": "lobby"})
        cent = Client(f"{server.url}/api", API_KEY, timeout=5)
        presence = await asyncio.to_thread(cent.presence, PresenceRequest(channel="room:api"))
        assert set(presence.presence) == {a.client_id, b.client_id}
        assert {info.user for info in presence.presence.values()} == {user_a, user_b}
        stats = await asyncio.to_thread(cent.presence_stats, PresenceStatsRequest(channel="room:api"))
        assert (stats.num_clients, stats.num_users) == (2, 2)
        channels = await asyncio.to_thread(cent.channels, ChannelsRequest(pattern="room:*"))
        assert channels.channels["room:api"].num_clients == 2
        assert "lobby" not in channels.channels
        every = await asyncio.to_thread(cent.channels, ChannelsRequest())
        assert every.channels["lobby"].num_clients == 2
        batch = await asyncio.to_thread(
            cent.batch,
            BatchRequest(
                requests=[
                    PublishRequest(channel="lobby", data={"n": 1}),
                    PresenceStatsRequest(channel="room:api"),
                ],
                parallel=True,
            ),
        )
        assert batch.replies[1].num_clients == 2
        for client in (a, b):
            assert (await client.push())["pub"]["data"] == {"n": 1}
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_api_errors(server: Server) -> None:
    assert server.api("presence", {"channel": "chat"})["error"]["code"] == 108
    assert server.api("presence", {"channel": "nope:x"})["error"]["code"] == 102
    assert server.api("presence", {})["error"]["code"] == 107
    raw = server.api("batch", {"commands": [{"publish": {"channel": "nope:x", "data": {}}}, {"info": {}}]})
    assert raw["replies"][0]["error"]["code"] == 102
    assert raw["replies"][1]["info"]["nodes"][0]["uid"]


def test_leave_for_clients_of_a_dead_shard(tmp_path) -> None:
    import os
    import signal

    from broker.hashing import writer_for

    extra = {"namespaces": NAMESPACES, "allow_subscribe_for_client": True}
    with Server(tmp_path, shards=2, **extra) as server:
        # The channel is written by shard 1; the watcher lives on shard 1, the victim on shard 0.
        channel = next(f"forced:d{i}" for i in range(1000) if writer_for(f"forced:d{i}", 2) == 1)
        watcher_user = next(f"w-{i}" for i in range(1000) if shard_for_user(f"w-{i}", 2) == 1)
        victim_user = next(f"v-{i}" for i in range(1000) if shard_for_user(f"v-{i}", 2) == 0)

        async def scenario() -> None:
            watcher = await connect(server, watcher_user)
            await watcher.call(subscribe={"channel": channel})
            assert (await watcher.push())["join"]["info"]["user"] == watcher_user
            victim = await connect(server, victim_user)
            await victim.call(subscribe={"channel": channel})
            assert (await watcher.push())["join"]["info"]["user"] == victim_user
            os.kill(server.shard_pids()[0], signal.SIGKILL)
            leave = await asyncio.wait_for(watcher.pushes.get(), 25)
            assert leave == {
                "channel": channel,
                "leave": {"info": {"user": victim_user, "client": victim.client_id}},
            }
            await watcher.close()

        asyncio.run(asyncio.wait_for(scenario(), 40))
