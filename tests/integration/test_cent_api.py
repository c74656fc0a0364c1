"""Every server API method through the official ``cent`` client, against a two-shard server.

Live connections come from raw WebSocket clients (``Ws``) and uni_http_stream clients
(``StreamClient``), placed on both shards. Error cases that ``cent``'s models refuse to build go through
the raw ``server.api``; error replies are kept out of ``cent`` batches (its batch parser expects a
result for every command).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from cent import (
    BatchRequest,
    BroadcastRequest,
    BroadcastResult,
    CentApiResponseError,
    CentUnauthorizedError,
    ChannelsRequest,
    ChannelsResult,
    Client,
    ConnectionsRequest,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    HistoryResult,
    InfoRequest,
    InfoResult,
    PresenceRequest,
    PresenceResult,
    PresenceStatsRequest,
    PresenceStatsResult,
    PublishRequest,
    PublishResult,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)

from broker.hashing import shard_for_user
from tests.integration.streamclient import StreamClient
from tests.integration.test_presence_and_channels import Ws, connect
from tests.support.server import Server
from tests.support.tokens import API_KEY, make_token
from tests.support.waiting import eventually_async

NAMESPACES = [
    {
        # History and presence: offsets, epochs, history, presence and join/leave.
        "name": "hist",
        "history_size": 100,
        "history_ttl": "300s",
        "presence": True,
        "join_leave": True,
        "allow_subscribe_for_client": True,
        "allow_history_for_subscriber": True,
        "allow_presence_for_subscriber": True,
        "allow_recovery": True,
    },
    # Presence without history.
    {"name": "room", "presence": True, "allow_subscribe_for_client": True},
    # Neither presence nor history: both are "not available" (108).
    {"name": "plain", "allow_subscribe_for_client": True},
]

# What the connections API reports as the source of a channel subscription.
SOURCE_CLIENT_ALLOWED = 6
SOURCE_SERVER_API = 10

T = TypeVar("T")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = {"namespaces": NAMESPACES, "allow_subscribe_for_client": True}
    with Server(tmp_path_factory.mktemp("cent"), shards=2, **extra) as srv:
        yield srv


@pytest.fixture(scope="module")
def cent(server: Server) -> Iterator[Client]:
    with Client(f"{server.url}/api", API_KEY, timeout=5) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def user_on(shard: int, prefix: str) -> str:
    base = unique(prefix)
    return next(f"{base}-{n}" for n in range(1000) if shard_for_user(f"{base}-{n}", 2) == shard)


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


async def call(method: Callable[..., T], *args: Any) -> T:
    """A ``cent`` call off the event loop, so that the WebSocket clients keep answering pings."""
    return await asyncio.to_thread(method, *args)


async def push_with(client: Ws, key: str) -> dict[str, Any]:
    """The next push holding ``key`` (pings and other pushes are skipped), within 5 s."""
    deadline = time.monotonic() + 5
    while True:
        push = await asyncio.wait_for(client.pushes.get(), max(0.01, deadline - time.monotonic()))
        if key in push:
            return push


async def closed(client: Ws) -> tuple[int | None, str | None]:
    """Wait until the server closed ``client``'s WebSocket: its close code and reason."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(client.reader), 5)
    assert client.reader.done(), "the connection is still open"
    return client.conn.close_code, client.conn.close_reason


async def subscribe(client: Ws, channel: str, **options: Any) -> dict[str, Any]:
    reply = await client.call(subscribe={"channel": channel, **options})
    assert "subscribe" in reply, reply
    return dict(reply["subscribe"])


def test_publish_history_and_history_remove(server: Server, cent: Client) -> None:
    channel = unique("hist:pub")

    async def scenario() -> None:
        listener = await connect(server, user_on(0, "listener"))
        await subscribe(listener, channel)
        first = await call(cent.publish, PublishRequest(channel=channel, data={"n": 1}))
        assert isinstance(first, PublishResult)
        assert first.offset == 1 and len(first.epoch) == 8, first
        pushed = await push_with(listener, "pub")
        assert pushed == {"channel": channel, "pub": {"data": {"n": 1}, "offset": 1}}, pushed
        rest = [await call(cent.publish, PublishRequest(channel=channel, data={"n": n})) for n in (2, 3, 4)]
        assert [(r.offset, r.epoch) for r in rest] == [(n, first.epoch) for n in (2, 3, 4)], rest
        tagged = await call(
            cent.publish, PublishRequest(channel=channel, data={"n": 5}, tags={"kind": "tagged"})
        )
        assert (tagged.offset, tagged.epoch) == (5, first.epoch)
        # No history in `room`: neither offset nor epoch.
        plain = await call(cent.publish, PublishRequest(channel=unique("room:pub"), data={"n": 0}))
        assert (plain.offset, plain.epoch) == (0, ""), plain

        full = await call(cent.history, HistoryRequest(channel=channel, limit=-1))
        assert isinstance(full, HistoryResult)
        assert [p.data for p in full.publications] == [{"n": n} for n in range(1, 6)], full
        assert [p.offset for p in full.publications] == [1, 2, 3, 4, 5], full
        assert full.publications[-1].tags == {"kind": "tagged"}, full
        assert (full.offset, full.epoch) == (5, first.epoch), full
        position = await call(cent.history, HistoryRequest(channel=channel))
        assert (position.publications, position.offset, position.epoch) == ([], 5, first.epoch)
        since = await call(
            cent.history,
            HistoryRequest(channel=channel, limit=2, since=StreamPosition(offset=2, epoch=first.epoch)),
        )
        assert [p.offset for p in since.publications] == [3, 4], since
        backwards = await call(cent.history, HistoryRequest(channel=channel, limit=2, reverse=True))
        assert [p.data["n"] for p in backwards.publications] == [5, 4], backwards

        # A subscriber's history agrees with the API's.
        from_client = await listener.call(history={"channel": channel, "limit": -1})
        assert [p["offset"] for p in from_client["history"]["publications"]] == [1, 2, 3, 4, 5]
        assert from_client["history"]["epoch"] == first.epoch

        removed = await call(cent.history_remove, HistoryRemoveRequest(channel=channel))
        assert removed.model_dump(exclude_none=True) == {}
        emptied = await call(cent.history, HistoryRequest(channel=channel, limit=-1))
        assert (emptied.publications, emptied.offset, emptied.epoch) == ([], 5, first.epoch), emptied
        after = await call(cent.publish, PublishRequest(channel=channel, data={"n": 6}))
        assert (after.offset, after.epoch) == (6, first.epoch), after
        await listener.close()

    run(scenario())


def test_broadcast(server: Server, cent: Client) -> None:
    with_history, without = unique("hist:bc"), unique("room:bc")

    async def scenario() -> None:
        a = await connect(server, user_on(0, "bc-a"))
        b = await connect(server, user_on(1, "bc-b"))
        await subscribe(a, with_history)
        await subscribe(b, without)
        await call(cent.publish, PublishRequest(channel=with_history, data={"warm": True}))
        await push_with(a, "pub")
        result = await call(
            cent.broadcast, BroadcastRequest(channels=[with_history, without], data={"to": "all"})
        )
        assert isinstance(result, BroadcastResult)
        assert [r.error for r in result.responses] == [None, None], result
        first, second = (r.result for r in result.responses)
        assert first is not None and first.offset == 2 and len(first.epoch) == 8, result
        assert second is not None and (second.offset, second.epoch) == (0, ""), result
        assert await push_with(a, "pub") == {
            "channel": with_history,
            "pub": {"data": {"to": "all"}, "offset": 2},
        }
        assert await push_with(b, "pub") == {"channel": without, "pub": {"data": {"to": "all"}}}
        await a.close()
        await b.close()

    run(scenario())


def test_subscribe_and_unsubscribe(server: Server, cent: Client) -> None:
    user = user_on(1, "api-sub")
    channel = unique("room:srv")

    async def scenario() -> None:
        client = await connect(server, user)
        assert (await call(cent.subscribe, SubscribeRequest(user=user, channel=channel))).model_dump(
            exclude_none=True
        ) == {}
        pushed = await push_with(client, "subscribe")
        assert pushed["channel"] == channel, pushed
        listed = await call(cent.connections, ConnectionsRequest(user=user, expression=""))
        state = listed.connections[client.client_id].state
        assert state is not None and state.channels is not None
        assert state.channels[channel].source == SOURCE_SERVER_API, listed
        presence = await call(cent.presence, PresenceRequest(channel=channel))
        assert set(presence.presence) == {client.client_id}, presence

        await call(cent.publish, PublishRequest(channel=channel, data={"server": "side"}))
        assert await push_with(client, "pub") == {"channel": channel, "pub": {"data": {"server": "side"}}}

        await call(cent.unsubscribe, UnsubscribeRequest(user=user, channel=channel))
        pushed = await push_with(client, "unsubscribe")
        assert pushed["channel"] == channel and pushed["unsubscribe"]["code"] == 2000, pushed
        gone = await eventually_async(
            lambda: call(cent.presence, PresenceRequest(channel=channel)), until=lambda p: not p.presence
        )
        assert gone.presence == {}, gone
        await client.close()

    run(scenario())


def test_disconnect(server: Server, cent: Client) -> None:
    user = user_on(0, "api-kick")

    async def scenario() -> None:
        first = await connect(server, user)
        second = await connect(server, user)
        third = await connect(server, user)
        await call(
            cent.disconnect,
            DisconnectRequest(
                user=user, client=second.client_id, disconnect=Disconnect(code=4501, reason="one")
            ),
        )
        assert await closed(second) == (4501, "one")
        listed = await call(cent.connections, ConnectionsRequest(user=user, expression=""))
        assert set(listed.connections) == {first.client_id, third.client_id}, listed

        await call(cent.disconnect, DisconnectRequest(user=user, whitelist=[first.client_id]))
        assert await closed(third) == (3503, "force disconnect")
        listed = await call(cent.connections, ConnectionsRequest(user=user, expression=""))
        assert set(listed.connections) == {first.client_id}, listed

        await call(cent.disconnect, DisconnectRequest(user=user))
        assert await closed(first) == (3503, "force disconnect")
        listed = await call(cent.connections, ConnectionsRequest(user=user, expression=""))
        assert listed.connections == {}, listed

    run(scenario())


def test_refresh(server: Server, cent: Client) -> None:
    user = user_on(1, "api-refresh")

    async def scenario() -> None:
        client = await connect(server, user)
        expire_at = int(time.time()) + 600
        await call(cent.refresh, RefreshRequest(user=user, expire_at=expire_at))
        pushed = await push_with(client, "refresh")
        assert pushed["refresh"]["expires"] is True, pushed
        assert 590 <= pushed["refresh"]["ttl"] <= 600, pushed
        await call(cent.refresh, RefreshRequest(user=user, client=client.client_id, expired=True))
        code, _ = await closed(client)
        assert code == 3005, code

    run(scenario())


def test_presence_presence_stats_and_channels(server: Server, cent: Client) -> None:
    channel = unique("hist:pres")
    other = unique("room:pres")
    ann, bob = user_on(0, "ann"), user_on(1, "bob")

    async def scenario() -> None:
        a = await connect(server, ann, info={"name": "Ann"})
        b = await connect(server, bob)
        b2 = await connect(server, bob)
        for client in (a, b, b2):
            await subscribe(client, channel)
        await subscribe(a, other)

        presence = await call(cent.presence, PresenceRequest(channel=channel))
        assert isinstance(presence, PresenceResult)
        assert set(presence.presence) == {a.client_id, b.client_id, b2.client_id}, presence
        assert presence.presence[a.client_id].user == ann
        assert presence.presence[a.client_id].conn_info == {"name": "Ann"}, presence
        assert {presence.presence[c.client_id].user for c in (b, b2)} == {bob}, presence
        stats = await call(cent.presence_stats, PresenceStatsRequest(channel=channel))
        assert isinstance(stats, PresenceStatsResult)
        assert (stats.num_clients, stats.num_users) == (3, 2), stats

        channels = await call(cent.channels, ChannelsRequest(pattern=f"{channel[:-3]}*"))
        assert isinstance(channels, ChannelsResult)
        assert set(channels.channels) == {channel}, channels
        assert channels.channels[channel].num_clients == 3, channels
        every = await call(cent.channels, ChannelsRequest())
        assert every.channels[channel].num_clients == 3 and every.channels[other].num_clients == 1

        await b2.close()
        stats = await eventually_async(
            lambda: call(cent.presence_stats, PresenceStatsRequest(channel=channel)),
            until=lambda s: s.num_clients == 2,
        )
        assert (stats.num_clients, stats.num_users) == (2, 2), stats
        await a.close()
        await b.close()
        gone = await eventually_async(
            lambda: call(cent.channels, ChannelsRequest(pattern=channel)), until=lambda c: not c.channels
        )
        assert gone.channels == {}, gone

    run(scenario())


def test_info(server: Server, cent: Client) -> None:
    async def scenario() -> None:
        before = await call(cent.info, InfoRequest())
        assert isinstance(before, InfoResult)
        assert len(before.nodes) == 1 and before.nodes[0].uid and before.nodes[0].name, before
        base = before.nodes[0].num_clients
        channel = unique("room:info")
        clients = [await connect(server, user_on(shard, "info")) for shard in (0, 1)]
        for client in clients:
            await subscribe(client, channel)
        during = await eventually_async(
            lambda: call(cent.info, InfoRequest()), until=lambda i: i.nodes[0].num_clients == base + 2
        )
        node = during.nodes[0]
        assert node.num_clients == base + 2, during
        assert node.num_users >= 2 and node.num_channels >= 1 and node.num_subs >= 2, during
        for client in clients:
            await client.close()
        after = await eventually_async(
            lambda: call(cent.info, InfoRequest()), until=lambda i: i.nodes[0].num_clients == base
        )
        assert after.nodes[0].num_clients == base, after

    run(scenario())


def test_batch(server: Server, cent: Client) -> None:
    channel = unique("hist:batch")
    room = unique("room:batch")

    async def scenario() -> None:
        listener = await connect(server, user_on(1, "batch"))
        await subscribe(listener, channel)
        await subscribe(listener, room)
        batch = await call(
            cent.batch,
            BatchRequest(
                requests=[
                    PublishRequest(channel=channel, data={"n": 1}),
                    PublishRequest(channel=channel, data={"n": 2}),
                    BroadcastRequest(channels=[channel, room], data={"n": 3}),
                    HistoryRequest(channel=channel, limit=-1),
                    PresenceRequest(channel=room),
                    PresenceStatsRequest(channel=channel),
                    ChannelsRequest(pattern=room),
                    InfoRequest(),
                ]
            ),
        )
        publish_1, publish_2, broadcast, history, presence, stats, channels, info = batch.replies
        assert isinstance(publish_1, PublishResult) and isinstance(publish_2, PublishResult)
        assert (publish_1.offset, publish_2.offset) == (1, 2), batch
        assert isinstance(broadcast, BroadcastResult)
        assert broadcast.responses[0].result is not None and broadcast.responses[0].result.offset == 3
        assert isinstance(history, HistoryResult)
        assert [p.data["n"] for p in history.publications] == [1, 2, 3], history
        assert isinstance(presence, PresenceResult) and set(presence.presence) == {listener.client_id}
        assert isinstance(stats, PresenceStatsResult) and (stats.num_clients, stats.num_users) == (1, 1)
        assert isinstance(channels, ChannelsResult) and channels.channels[room].num_clients == 1
        assert isinstance(info, InfoResult) and info.nodes[0].uid
        received = [await push_with(listener, "pub") for _ in range(4)]
        # Publications of one channel keep their order; the two channels may interleave either way.
        assert sorted((p["channel"], p["pub"]["data"]["n"]) for p in received) == sorted(
            [(channel, 1), (channel, 2), (channel, 3), (room, 3)]
        ), received
        in_channel = [p["pub"]["data"]["n"] for p in received if p["channel"] == channel]
        assert in_channel == [1, 2, 3], received

        parallel = await call(
            cent.batch,
            BatchRequest(
                requests=[PublishRequest(channel=room, data={"n": n}) for n in range(4, 8)], parallel=True
            ),
        )
        assert len(parallel.replies) == 4 and all(isinstance(r, PublishResult) for r in parallel.replies)
        received = [await push_with(listener, "pub") for _ in range(4)]
        assert sorted(p["pub"]["data"]["n"] for p in received) == [4, 5, 6, 7], received
        await listener.close()

    run(scenario())


def test_connections(server: Server, cent: Client) -> None:
    user = user_on(0, "conns")
    channel = unique("room:conns")

    async def scenario() -> None:
        ws = await connect(server, user)
        await subscribe(ws, channel)
        stream = StreamClient(
            server.port, {"token": make_token(user), "name": "terminal", "version": "1.2"}, "uni_http_stream"
        )
        try:
            stream_id = (await asyncio.to_thread(stream.connect))["client"]
            listed = await call(cent.connections, ConnectionsRequest(user=user, expression=""))
            assert set(listed.connections) == {ws.client_id, stream_id}, listed
            web, uni = listed.connections[ws.client_id], listed.connections[stream_id]
            assert (web.transport, web.protocol, web.user) == ("websocket", "json", user), web
            assert (uni.transport, uni.protocol, uni.user) == ("uni_http_stream", "json", user), uni
            assert (uni.app_name, uni.app_version) == ("terminal", "1.2"), uni
            assert web.state is not None and web.state.channels is not None
            assert web.state.channels[channel].source == SOURCE_CLIENT_ALLOWED, web
            by_channel = await call(
                cent.connections, ConnectionsRequest(user="", expression=f'"{channel}" in channels')
            )
            assert set(by_channel.connections) == {ws.client_id}, by_channel
            by_transport = await call(
                cent.connections,
                ConnectionsRequest(user="", expression=f'user == "{user}" && transport == "uni_http_stream"'),
            )
            assert set(by_transport.connections) == {stream_id}, by_transport
            nobody = await call(cent.connections, ConnectionsRequest(user=unique("nobody"), expression=""))
            assert nobody.connections == {}, nobody
        finally:
            stream.close()
            await ws.close()

    run(scenario())


def api_error(call_cent: Callable[[], Any]) -> int:
    with pytest.raises(CentApiResponseError) as info:
        call_cent()
    return info.value.code


def test_errors(server: Server, cent: Client) -> None:
    # 107: bad params. What cent's models cannot express goes through the raw API.
    assert server.api("publish", {"data": {"n": 1}})["error"]["code"] == 107
    assert server.api("publish", {"channel": "room:x"})["error"]["code"] == 107
    assert server.api("broadcast", {"data": {}})["error"]["code"] == 107
    assert server.api("subscribe", {"channel": "room:x"})["error"]["code"] == 107
    assert server.api("history", {"channel": "hist:x", "limit": "many"})["error"]["code"] == 107
    assert api_error(lambda: cent.publish(PublishRequest(channel="", data={}))) == 107
    assert api_error(lambda: cent.presence(PresenceRequest(channel=""))) == 107
    assert api_error(lambda: cent.history(HistoryRequest(channel=""))) == 107
    assert api_error(lambda: cent.unsubscribe(UnsubscribeRequest(user="", channel="room:x"))) == 107
    # 102: a namespace that is not configured.
    assert api_error(lambda: cent.publish(PublishRequest(channel="nope:x", data={}))) == 102
    assert api_error(lambda: cent.history(HistoryRequest(channel="nope:x"))) == 102
    assert api_error(lambda: cent.presence(PresenceRequest(channel="nope:x"))) == 102
    assert api_error(lambda: cent.presence_stats(PresenceStatsRequest(channel="nope:x"))) == 102
    assert api_error(lambda: cent.history_remove(HistoryRemoveRequest(channel="nope:x"))) == 102
    # 108: the feature is off for the channel.
    assert api_error(lambda: cent.presence(PresenceRequest(channel="plain:x"))) == 108
    assert api_error(lambda: cent.presence_stats(PresenceStatsRequest(channel="plain:x"))) == 108
    assert api_error(lambda: cent.history(HistoryRequest(channel="plain:x", limit=-1))) == 108
    assert api_error(lambda: cent.history(HistoryRequest(channel="room:x"))) == 108
    assert api_error(lambda: cent.history_remove(HistoryRemoveRequest(channel="plain:x"))) == 108
    # A broadcast answers per channel.
    mixed = cent.broadcast(BroadcastRequest(channels=["plain:ok", "nope:x"], data={}))
    assert mixed.responses[0].error is None and mixed.responses[0].result is not None, mixed
    assert mixed.responses[1].error is not None and mixed.responses[1].error.code == 102, mixed
    # A wrong key is refused before any method runs.
    with (
        Client(f"{server.url}/api", "wrong-key", timeout=5) as stranger,
        pytest.raises(CentUnauthorizedError),
    ):
        stranger.info(InfoRequest())
