"""What the official SDKs must be able to do against Switchboard, written once for both SDKs.

Each scenario takes the server, the SDK (``"js"``: centrifuge-js in Node, ``"python"``:
centrifuge-python) and the protocol (``"json"`` or ``"protobuf"``), and drives real clients over
``/connection/websocket``. ``test_official_sdks.py`` runs them for each library and protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any, Protocol

import websockets

from broker.hashing import shard_for_user, writer_for
from tests.sdk.common import (
    EXPIRED_CLOSE_DELAY,
    SERVER_EXTRA,
    SHARDS,
    Event,
    EventLog,
    api,
    channel_sources,
    connection_token,
    connections,
    matches,
    unique,
    users_on_different_shards,
    ws_url,
)
from tests.sdk.drivers import NodeClient, PyClient
from tests.support.server import Server
from tests.support.tokens import subscription_token
from tests.support.waiting import eventually_async

# What the connections API reports as the source of each channel subscription.
SOURCE_TOKEN = 1
SOURCE_SUBSCRIPTION_TOKEN = 3
SOURCE_CLIENT_ALLOWED = 6
SOURCE_SERVER_API = 10


class SdkClient(Protocol):
    label: str
    log: EventLog

    async def subscribe(
        self,
        channel: str,
        token: str = "",
        refresh_tokens: list[str] | None = None,
        recoverable: bool = False,
        positioned: bool = False,
        join_leave: bool = False,
    ) -> Any: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, data: Any) -> None: ...

    async def rpc(self, method: str, data: Any) -> Any: ...

    async def history(
        self, channel: str, limit: int = 0, since: dict[str, Any] | None = None, reverse: bool = False
    ) -> dict[str, Any]: ...

    async def presence(self, channel: str) -> dict[str, Any]: ...

    async def presence_stats(self, channel: str) -> dict[str, Any]: ...

    async def disconnect(self) -> None: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...


async def open_client(
    stack: contextlib.AsyncExitStack,
    sdk: str,
    server: Server,
    label: str,
    protocol: str,
    token: str,
    refresh_tokens: list[str] | None = None,
    name: str | None = None,
) -> SdkClient:
    """A started client of ``sdk`` (connecting; wait for its ``connected`` event), closed with ``stack``."""
    client: NodeClient | PyClient
    if sdk == "js":
        scenario: dict[str, Any] = {
            "url": ws_url(server),
            "protocol": protocol,
            "token": token,
            "name": name or "js-sdk-test",
        }
        if refresh_tokens:
            scenario["refresh_tokens"] = refresh_tokens
        client = NodeClient(label, scenario)
    elif sdk == "python":
        client = PyClient(
            label,
            ws_url(server),
            protocol,
            token=token,
            refresh_tokens=refresh_tokens,
            name=name or "python-sdk-test",
        )
    else:
        raise ValueError(f"unknown SDK {sdk!r}")
    return await stack.enter_async_context(client)


async def connected(client: SdkClient) -> str:
    """The client id of the client's first connection."""
    event = await client.log.wait("connected")
    return str(event["client"])


async def subscribed(client: SdkClient, channel: str, server_side: bool = False) -> None:
    await client.log.wait("subscribed", channel=channel, server_side=server_side)


async def connect_subscribe_and_receive_api_publication(server: Server, sdk: str, protocol: str) -> None:
    user = unique(f"{sdk}-user")
    channel = unique("chat:room")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, server, "subscriber", protocol, connection_token(user))
        client_id = await connected(client)
        await client.subscribe(channel)
        await subscribed(client, channel)

        data = {"text": "from the API", "n": 1, "nested": {"list": [1, 2, 3]}}
        await api(server, "publish", {"channel": channel, "data": data})
        publication = await client.log.wait("publication", channel=channel)
        assert publication["data"] == data, publication
        assert publication["server_side"] is False, publication
        assert publication["info"] is None, f"an API publication has no client info: {publication}"

        listed = await connections(server, user=user)
        assert set(listed) == {client_id}, listed
        assert channel_sources(listed[client_id]) == {channel: SOURCE_CLIENT_ALLOWED}, listed


async def publication_from_client_on_other_shard(
    server: Server, subscriber_sdk: str, subscriber_protocol: str, publisher_sdk: str, publisher_protocol: str
) -> None:
    """A publication made through one SDK reaches a subscriber whose connection lives on the other shard."""
    receiver, sender = users_on_different_shards("cross")
    channel = unique("chat:cross")
    async with contextlib.AsyncExitStack() as stack:
        sub = await open_client(
            stack, subscriber_sdk, server, "subscriber", subscriber_protocol, connection_token(receiver)
        )
        pub = await open_client(
            stack, publisher_sdk, server, "publisher", publisher_protocol, connection_token(sender)
        )
        await connected(sub)
        publisher_id = await connected(pub)
        await sub.subscribe(channel)
        await pub.subscribe(channel)  # chat: publishing is for subscribers
        await subscribed(sub, channel)
        await subscribed(pub, channel)

        data = {"text": "hello across shards", "from": sender}
        await pub.publish(channel, data)
        for client in (sub, pub):
            publication = await client.log.wait("publication", channel=channel)
            assert publication["data"] == data, publication
            assert publication["info"] == {"user": sender, "client": publisher_id}, publication

        # And back the other way.
        reply = {"text": "hello back", "from": receiver}
        await sub.publish(channel, reply)
        publication = await pub.log.wait_until(
            lambda e: e.get("event") == "publication" and e.get("data") == reply, "the reply"
        )
        assert publication["channel"] == channel
        assert (publication["info"] or {}).get("user") == receiver, publication


async def private_channel_with_subscription_token(server: Server, sdk: str, protocol: str) -> None:
    user = unique(f"{sdk}-private")
    by_option = unique("$priv:option")
    by_callback = unique("$priv:callback")
    no_token = unique("$priv:none")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, server, "private", protocol, connection_token(user))
        client_id = await connected(client)
        # The `token` option.
        await client.subscribe(by_option, token=subscription_token(user, by_option))
        # No token: the SDK asks its getToken callback.
        await client.subscribe(by_callback, refresh_tokens=[subscription_token(user, by_callback)])
        await subscribed(client, by_option)
        await subscribed(client, by_callback)
        await client.log.wait("sub_get_token", channel=by_callback, n=1)

        for channel in (by_option, by_callback):
            data = {"secret": channel}
            await api(server, "publish", {"channel": channel, "data": data})
            publication = await client.log.wait("publication", channel=channel)
            assert publication["data"] == data, publication

        listed = await connections(server, user=user)
        assert set(listed) == {client_id}, listed
        state = listed[client_id].get("state", {})
        assert channel_sources(listed[client_id]) == {
            by_option: SOURCE_SUBSCRIPTION_TOKEN,
            by_callback: SOURCE_SUBSCRIPTION_TOKEN,
        }, listed
        assert set(state.get("subscription_tokens", {})) == {by_option, by_callback}, listed

        # Without a subscription token a private channel is refused with 103 (permission denied),
        # which the SDK treats as final for that subscription.
        await client.subscribe(no_token)
        refused = await client.log.wait("unsubscribed", channel=no_token)
        assert refused["code"] == 103, refused
        assert not client.log.all("subscribed", channel=no_token), client.log.describe()


async def server_side_subscription_from_token(server: Server, sdk: str, protocol: str) -> None:
    user = unique(f"{sdk}-news")
    channel = unique("news:feed")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(
            stack, sdk, server, "server-side", protocol, connection_token(user, channels=[channel])
        )
        client_id = await connected(client)
        await subscribed(client, channel, server_side=True)

        data = {"headline": "server-side subscriptions work"}
        await api(server, "publish", {"channel": channel, "data": data})
        publication = await client.log.wait("publication", channel=channel)
        assert publication["server_side"] is True, publication
        assert publication["data"] == data, publication

        listed = await connections(server, user=user)
        assert set(listed) == {client_id}, listed
        assert channel_sources(listed[client_id]) == {channel: SOURCE_TOKEN}, listed


async def unrefreshed_close(server: Server, token: str) -> tuple[int, str]:
    """Connect over raw WebSocket (JSON) with ``token``, answer pings, never refresh: the close frame."""
    async with websockets.connect(ws_url(server), proxy=None, open_timeout=5) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token, "name": "control"}}))
        reply = json.loads(await ws.recv())
        assert reply.get("connect", {}).get("expires") is True, reply
        try:
            async for message in ws:
                if message == "{}":
                    await ws.send("{}")
        except websockets.ConnectionClosed:
            pass
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


async def token_refresh_through_get_token(server: Server, sdk: str, protocol: str) -> None:
    """A connection whose token expires in ~3 s stays up: the SDK asks getToken and refreshes.

    A control connection of the same user with the same token that never refreshes is closed with
    3005 meanwhile, which shows that the SDK's refresh is what kept its session.
    """
    user = unique(f"{sdk}-refresh")
    lifetime = 3
    expires_at = time.time() + lifetime
    short = connection_token(user, ttl=lifetime)
    fresh = connection_token(user, ttl=3600)
    async with contextlib.AsyncExitStack() as stack:
        control = asyncio.create_task(unrefreshed_close(server, short))
        stack.push_async_callback(_cancel, control)
        client = await open_client(stack, sdk, server, "refresh", protocol, short, refresh_tokens=[fresh])
        client_id = await connected(client)
        first = client.log.events.index(client.log.all("connected")[0])

        await client.log.wait("get_token", timeout=lifetime + 10, n=1)
        # Well past the first expiry plus the server's close delay.
        await asyncio.sleep(max(0.0, expires_at + EXPIRED_CLOSE_DELAY + 2.0 - time.time()))
        gone = client.log.after(first + 1, "disconnected") + client.log.after(first + 1, "connecting")
        assert not gone, f"the connection did not survive its first expiry: {gone}\n{client.log.describe()}"
        assert len(client.log.all("connected")) == 1, client.log.describe()

        code, reason = await asyncio.wait_for(control, 5)
        assert code == 3005, f"the unrefreshed control connection was closed with {code} {reason!r}"
        listed = await connections(server, user=user)
        assert set(listed) == {client_id}, listed


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def disconnect_by_api(
    server: Server, sdk: str, protocol: str, disconnect: dict[str, Any] | None, code: int, reason: str
) -> None:
    """The API's disconnect reaches the SDK with its code and reason, and the SDK stays disconnected."""
    user = unique(f"{sdk}-kick")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, server, "kicked", protocol, connection_token(user))
        client_id = await connected(client)
        listed = await connections(server, user=user)
        assert set(listed) == {client_id}, listed

        params: dict[str, Any] = {"user": user}
        if disconnect is not None:
            params["disconnect"] = disconnect
        await api(server, "disconnect", params)
        event = await client.log.wait("disconnected")
        assert (event["code"], event["reason"]) == (code, reason), event

        after = client.log.events.index(event) + 1
        await client.log.quiet(2.0, ("connecting", "connected"), start=after)
        listed = await eventually_async(
            lambda: connections(server, user=user), until=lambda c: not c, what="no sessions left"
        )
        assert listed == {}, listed


async def connections_list_every_session(server: Server, sdk: str, protocol: str) -> None:
    """Every SDK session of a user is listed with transport, protocol, channels and their sources."""
    user = unique(f"{sdk}-sessions")
    news = unique("news:feed")
    chat = unique("chat:room")
    private = unique("$priv:room")
    first_name, second_name = f"{sdk}-first", f"{sdk}-second"
    async with contextlib.AsyncExitStack() as stack:
        first = await open_client(
            stack, sdk, server, "first", protocol, connection_token(user, channels=[news]), name=first_name
        )
        second = await open_client(
            stack, sdk, server, "second", protocol, connection_token(user), name=second_name
        )
        first_id = await connected(first)
        second_id = await connected(second)
        await first.subscribe(chat)
        await first.subscribe(private, token=subscription_token(user, private))
        await subscribed(first, news, server_side=True)
        await subscribed(first, chat)
        await subscribed(first, private)

        expected = {news: SOURCE_TOKEN, chat: SOURCE_CLIENT_ALLOWED, private: SOURCE_SUBSCRIPTION_TOKEN}
        listed = await eventually_async(
            lambda: connections(server, user=user),
            until=lambda c: len(c) == 2 and first_id in c and channel_sources(c[first_id]) == expected,
            what="both sessions with every channel",
        )
        assert set(listed) == {first_id, second_id}, listed
        for client_id, name in ((first_id, first_name), (second_id, second_name)):
            info = listed[client_id]
            assert info["transport"] == "websocket", info
            assert info["protocol"] == protocol, info
            assert info.get("user") == user, info
            assert info.get("app_name") == name, info
        assert channel_sources(listed[first_id]) == expected, listed
        assert set(listed[first_id]["state"].get("subscription_tokens", {})) == {private}, listed
        assert channel_sources(listed[second_id]) == {}, listed

        by_channel = await connections(server, expression=f'"{chat}" in channels')
        assert set(by_channel) == {first_id}, by_channel
        by_fields = await connections(
            server, expression=f'user == "{user}" && transport == "websocket" && protocol == "{protocol}"'
        )
        assert set(by_fields) == {first_id, second_id}, by_fields


async def server_api_subscribe_broadcast_unsubscribe(server: Server, sdk: str, protocol: str) -> None:
    """The API's subscribe, broadcast and unsubscribe as the SDK sees them."""
    user = unique(f"{sdk}-apisub")
    news = unique("news:api")
    chat = unique("chat:api")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, server, "api-sub", protocol, connection_token(user))
        client_id = await connected(client)
        await client.subscribe(chat)
        await subscribed(client, chat)

        await api(server, "subscribe", {"user": user, "channel": news})
        await subscribed(client, news, server_side=True)
        listed = await eventually_async(
            lambda: connections(server, user=user),
            until=lambda c: news in channel_sources(c.get(client_id, {})),
            what="the API subscription",
        )
        assert channel_sources(listed[client_id]) == {chat: SOURCE_CLIENT_ALLOWED, news: SOURCE_SERVER_API}

        data = {"to": "both channels"}
        result = await api(server, "broadcast", {"channels": [news, chat], "data": data})
        responses = result.get("responses", [])
        assert len(responses) == 2 and not any("error" in r for r in responses), result
        for channel, server_side in ((news, True), (chat, False)):
            publication = await client.log.wait("publication", channel=channel)
            assert publication["data"] == data, publication
            assert publication["server_side"] is server_side, publication

        await api(server, "unsubscribe", {"user": user, "channel": news})
        await client.log.wait("unsubscribed", channel=news, server_side=True)
        listed = await eventually_async(
            lambda: connections(server, user=user),
            until=lambda c: news not in channel_sources(c.get(client_id, {})),
            what="the API unsubscription",
        )
        assert channel_sources(listed[client_id]) == {chat: SOURCE_CLIENT_ALLOWED}, listed
        # The client-side subscription is untouched and the connection is still up.
        assert not client.log.all("disconnected"), client.log.describe()


# History, recovery, presence and join/leave need namespaces with those features on: the tests using
# them run against a server with FEATURES_EXTRA (SERVER_EXTRA plus these namespaces).
FEATURE_NAMESPACES: list[dict[str, Any]] = [
    {
        # Channels with history: recoverable subscriptions, history for subscribers, publishing for them.
        "name": "hist",
        "history_size": 200,
        "history_ttl": "300s",
        "allow_subscribe_for_client": True,
        "allow_history_for_subscriber": True,
        "allow_publish_for_subscriber": True,
        "allow_recovery": True,
    },
    {
        # Presence and join/leave, for subscribers that ask for them.
        "name": "room",
        "presence": True,
        "join_leave": True,
        "allow_subscribe_for_client": True,
        "allow_presence_for_subscriber": True,
    },
]
FEATURES_EXTRA: dict[str, Any] = {
    **SERVER_EXTRA,
    "namespaces": [*SERVER_EXTRA["namespaces"], *FEATURE_NAMESPACES],
}
MISSED = 50


async def publish_numbers(server: Server, channel: str, numbers: range) -> list[int]:
    """Publish ``{"n": n}`` for each number through the API, in order: the offsets the API returned."""
    offsets = []
    for n in numbers:
        result = await api(server, "publish", {"channel": channel, "data": {"n": n}})
        offsets.append(int(result["offset"]))
    return offsets


async def numbers_received(client: SdkClient, channel: str, count: int, timeout: float = 20.0) -> list[Event]:
    """Wait until ``count`` publications arrived in ``channel``, then a little longer for duplicates."""
    await client.log.wait_until(
        lambda _: len(client.log.all("publication", channel=channel)) >= count,
        f"{count} publications in {channel}",
        timeout,
    )
    await asyncio.sleep(0.5)  # the point: duplicates would arrive meanwhile
    return client.log.all("publication", channel=channel)


def assert_exactly_once_in_order(
    client: SdkClient, publications: list[Event], numbers: list[int], offsets: list[int]
) -> None:
    received = [p["data"]["n"] for p in publications]
    assert received == numbers, f"expected {numbers}, got {received}\n{client.log.describe()}"
    assert [p["offset"] for p in publications] == offsets, publications


async def recovery_after_reconnect(server: Server, sdk: str, protocol: str) -> None:
    """A recoverable subscription gets every publication made while its client was away, once, in order,
    and the SDK reports ``recovered``."""
    user = unique(f"{sdk}-recover")
    channel = unique("hist:recover")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, server, "recovering", protocol, connection_token(user))
        await connected(client)
        await client.subscribe(channel, recoverable=True)
        first = await client.log.wait("subscribed", channel=channel, server_side=False)
        assert first["recoverable"] is True and first["was_recovering"] is False, first
        offsets = await publish_numbers(server, channel, range(1))
        await numbers_received(client, channel, 1)

        await client.disconnect()
        gone = await client.log.wait("disconnected")
        after = client.log.events.index(gone) + 1
        offsets += await publish_numbers(server, channel, range(1, MISSED + 1))
        await client.connect()
        await client.log.wait("connected", start=after)
        again = await client.log.wait("subscribed", channel=channel, server_side=False, start=after)
        assert again["was_recovering"] is True and again["recovered"] is True, again
        assert again["epoch"] == first["epoch"], (first, again)

        publications = await numbers_received(client, channel, MISSED + 1)
        assert_exactly_once_in_order(client, publications, list(range(MISSED + 1)), offsets)
        # Live publications go on after the recovered ones.
        offsets += await publish_numbers(server, channel, range(MISSED + 1, MISSED + 2))
        publications = await numbers_received(client, channel, MISSED + 2)
        assert_exactly_once_in_order(client, publications, list(range(MISSED + 2)), offsets)


async def _server_ready(server: Server) -> None:
    await asyncio.to_thread(server.wait_ready, 30)


async def recovery_across_shard_restart(server: Server, sdk: str, protocol: str) -> None:
    """The shard holding the client is killed while the channel's writer (the other shard) keeps the
    stream: the SDK reconnects by itself once the shard is back and recovers what it missed."""
    user = unique(f"{sdk}-shardkill")
    home = shard_for_user(user, SHARDS)
    assert home is not None
    channel = next(
        name for name in (unique("hist:far") for _ in range(1000)) if writer_for(name, SHARDS) != home
    )
    async with contextlib.AsyncExitStack() as stack:
        # Whatever happens here, the next test gets a server with every shard up.
        stack.push_async_callback(_server_ready, server)
        client = await open_client(stack, sdk, server, "shard-victim", protocol, connection_token(user))
        client_id = await connected(client)
        listed = await connections(server, user=user)
        assert set(listed) == {client_id}, listed
        await client.subscribe(channel, recoverable=True)
        first = await client.log.wait("subscribed", channel=channel, server_side=False)
        assert first["recoverable"] is True, first
        offsets = await publish_numbers(server, channel, range(1))
        await numbers_received(client, channel, 1)

        pid = (await asyncio.to_thread(server.shard_pids))[home]
        mark = len(client.log.events)
        os.kill(pid, signal.SIGKILL)
        offsets += await publish_numbers(server, channel, range(1, MISSED + 1))
        lost = await client.log.wait("connecting", start=mark)
        assert lost["code"] != 0, lost  # not a disconnect the client asked for

        again = await client.log.wait("subscribed", 30, mark, channel=channel, server_side=False)
        assert again["was_recovering"] is True and again["recovered"] is True, again
        assert again["epoch"] == first["epoch"], (first, again)
        new_id = str(client.log.after(mark, "connected")[0]["client"])
        assert new_id != client_id
        restarted = (await asyncio.to_thread(server.shard_pids)).get(home)
        assert restarted is not None and restarted != pid, (pid, restarted)

        publications = await numbers_received(client, channel, MISSED + 1)
        assert_exactly_once_in_order(client, publications, list(range(MISSED + 1)), offsets)
        offsets += await publish_numbers(server, channel, range(MISSED + 1, MISSED + 2))
        publications = await numbers_received(client, channel, MISSED + 2)
        assert_exactly_once_in_order(client, publications, list(range(MISSED + 2)), offsets)


async def _joined(
    client: SdkClient, name: str, channel: str, user: str, client_id: str, start: int = 0
) -> Event:
    return await client.log.wait_until(
        lambda e: matches(e, name, {"channel": channel, "info": {"user": user, "client": client_id}}),
        f"{name} of {user} ({client_id}) in {channel}",
        start=start,
    )


async def presence_and_join_leave_across_shards(server: Server, sdk: str, protocol: str) -> None:
    """Two SDK clients on different shards see each other in presence and get each other's join/leave."""
    first_user, second_user = users_on_different_shards(f"{sdk}-presence")
    channel = unique("room:lobby")
    async with contextlib.AsyncExitStack() as stack:
        first = await open_client(stack, sdk, server, "first", protocol, connection_token(first_user))
        second = await open_client(stack, sdk, server, "second", protocol, connection_token(second_user))
        first_id = await connected(first)
        second_id = await connected(second)
        await first.subscribe(channel, join_leave=True)
        await subscribed(first, channel)
        await second.subscribe(channel, join_leave=True)
        await subscribed(second, channel)
        await _joined(first, "join", channel, second_user, second_id)

        everyone = {first_id: {"user": first_user, "client": first_id}}
        everyone[second_id] = {"user": second_user, "client": second_id}
        for client in (first, second):
            assert await client.presence(channel) == everyone, client.label
            assert await client.presence_stats(channel) == {"num_clients": 2, "num_users": 2}, client.label
        from_api = (await api(server, "presence", {"channel": channel}))["presence"]
        assert {k: {"user": v["user"], "client": v["client"]} for k, v in from_api.items()} == everyone
        assert await api(server, "presence_stats", {"channel": channel}) == {"num_clients": 2, "num_users": 2}

        # Leave by unsubscribing, then come back and leave by disconnecting: the other shard sees all three.
        await second.unsubscribe(channel)
        await _joined(first, "leave", channel, second_user, second_id)
        remaining = await eventually_async(
            lambda: first.presence(channel), until=lambda p: len(p) == 1, what="one client left"
        )
        assert remaining == {first_id: everyone[first_id]}, remaining
        assert await first.presence_stats(channel) == {"num_clients": 1, "num_users": 1}

        mark = len(first.log.events)
        await second.subscribe(channel, join_leave=True)
        await _joined(first, "join", channel, second_user, second_id, start=mark)
        mark = len(first.log.events)
        await second.disconnect()
        await _joined(first, "leave", channel, second_user, second_id, start=mark)
        for name in ("join", "leave"):
            seen = first.log.all(name, channel=channel, info=everyone[second_id])
            assert len(seen) == 2, f"{name}: {seen}\n{first.log.describe()}"
        assert not second.log.all("leave", channel=channel, info=everyone[first_id]), second.log.describe()


async def history_from_sdk_matches_api(server: Server, sdk: str, protocol: str) -> None:
    """The SDK's history calls return what the API's history returns, for every query shape."""
    user = unique(f"{sdk}-history")
    channel = unique("hist:same")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, server, "historian", protocol, connection_token(user))
        client_id = await connected(client)
        await publish_numbers(server, channel, range(5))
        await client.subscribe(channel)
        await subscribed(client, channel)
        await client.publish(channel, {"n": 5})
        await client.log.wait("publication", channel=channel)

        def shaped(result: dict[str, Any]) -> dict[str, Any]:
            return {
                "publications": [
                    {"data": p["data"], "offset": int(p["offset"]), "info": _api_info(p.get("info"))}
                    for p in result.get("publications", [])
                ],
                "offset": int(result["offset"]),
                "epoch": result["epoch"],
            }

        everything = await client.history(channel, limit=-1)
        assert [p["data"] for p in everything["publications"]] == [{"n": n} for n in range(6)], everything
        assert [p["offset"] for p in everything["publications"]] == list(range(1, 7)), everything
        assert everything["publications"][-1]["info"] == {"user": user, "client": client_id}, everything
        assert everything["offset"] == 6 and everything["epoch"], everything

        queries: list[dict[str, Any]] = [
            {"limit": -1},
            {"limit": 0},
            {"limit": 2},
            {"limit": 2, "since": {"offset": 3, "epoch": everything["epoch"]}},
            {"limit": 3, "reverse": True},
        ]
        for query in queries:
            from_sdk = await client.history(channel, **query)
            from_api = shaped(await api(server, "history", {"channel": channel, **query}))
            assert from_sdk == from_api, (query, from_sdk, from_api)
        since = await client.history(channel, limit=2, since={"offset": 3, "epoch": everything["epoch"]})
        assert [p["offset"] for p in since["publications"]] == [4, 5], since


def _api_info(info: dict[str, Any] | None) -> dict[str, str] | None:
    return {"user": info.get("user", ""), "client": info.get("client", "")} if info else None


WRITER_RESTART_SUBSCRIBERS = 3
AFTER_RESTART = 30


def _user_on(shard: int, prefix: str) -> str:
    return next(u for u in (unique(prefix) for _ in range(1000)) if shard_for_user(u, SHARDS) == shard)


async def _writer_restarted(server: Server, index: int, old_pid: int) -> None:
    """Wait until the supervisor has shard ``index`` running again under a new pid and it is ready."""

    def restarted() -> bool:
        try:
            pid = server.shard_pids().get(index)
        except Exception:
            return False
        return pid is not None and pid != old_pid

    await eventually_async(
        lambda: asyncio.to_thread(restarted), timeout=20, interval=0.1, what=f"shard {index} restarted"
    )
    await _server_ready(server)


async def publications_across_writer_restart(server: Server, sdk: str, protocol: str) -> None:
    """The channel's writer (the other shard) is killed and comes back with empty streams: the recoverable
    subscribers are told (2500, then ``recovered: false``) and then get every publication made after the
    restart, once and in order; a subscriber without position keeps receiving, never unsubscribed."""
    home = 0
    writer = 1
    channel = next(
        name for name in (unique("hist:writer") for _ in range(1000)) if writer_for(name, SHARDS) == writer
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_server_ready, server)
        clients: list[SdkClient] = []
        for n in range(WRITER_RESTART_SUBSCRIBERS):
            user = _user_on(home, f"{sdk}-wsub{n}")
            client = await open_client(
                stack, sdk, server, f"recoverable-{n}", protocol, connection_token(user)
            )
            await connected(client)
            await client.subscribe(channel, recoverable=True)
            clients.append(client)
        plain_user = _user_on(home, f"{sdk}-wplain")
        plain = await open_client(stack, sdk, server, "plain", protocol, connection_token(plain_user))
        await connected(plain)
        await plain.subscribe(channel)
        for client in [*clients, plain]:
            await subscribed(client, channel)
        await publish_numbers(server, channel, range(1))
        for client in [*clients, plain]:
            await numbers_received(client, channel, 1)

        pid = (await asyncio.to_thread(server.shard_pids))[writer]
        marks = [len(client.log.events) for client in clients]
        os.kill(pid, signal.SIGKILL)
        await _writer_restarted(server, writer, pid)
        offsets = await publish_numbers(server, channel, range(1, AFTER_RESTART + 1))
        assert offsets == list(range(1, AFTER_RESTART + 1)), offsets  # a new epoch

        for client, mark in zip(clients, marks, strict=True):
            told = await client.log.wait("subscribing", 10, mark, channel=channel)
            assert told["code"] == 2500, told
            again = await client.log.wait("subscribed", 10, mark, channel=channel, server_side=False)
            assert again["was_recovering"] is True and again["recovered"] is False, again
            publications = await numbers_received(client, channel, 1 + AFTER_RESTART)
            after = publications[1:]
            assert_exactly_once_in_order(client, after, list(range(1, AFTER_RESTART + 1)), offsets)
        received = await numbers_received(plain, channel, 1 + AFTER_RESTART)
        assert [p["data"]["n"] for p in received] == list(range(AFTER_RESTART + 1)), plain.log.describe()
        assert not plain.log.all("subscribing", channel=channel, server_side=False)[1:], plain.log.describe()
        assert not plain.log.all("unsubscribed"), plain.log.describe()


async def publications_across_router_restart(server: Server, sdk: str, protocol: str) -> None:
    """The router is killed and respawned: the clients live on the shards and are not disturbed, and
    every publication made through the new router reaches them, once and in order."""
    writer = 1
    channel = next(
        name for name in (unique("hist:router") for _ in range(1000)) if writer_for(name, SHARDS) == writer
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_server_ready, server)
        clients: list[SdkClient] = []
        for n in range(WRITER_RESTART_SUBSCRIBERS):
            user = _user_on(0, f"{sdk}-rsub{n}")
            client = await open_client(
                stack, sdk, server, f"recoverable-{n}", protocol, connection_token(user)
            )
            await connected(client)
            await client.subscribe(channel, recoverable=True)
            clients.append(client)
        for client in clients:
            await subscribed(client, channel)
        marks = [len(client.log.events) for client in clients]
        os.kill(server.router_pid(), signal.SIGKILL)
        await _server_ready(server)
        offsets = await publish_numbers(server, channel, range(AFTER_RESTART))
        for client, mark in zip(clients, marks, strict=True):
            publications = await numbers_received(client, channel, AFTER_RESTART)
            assert_exactly_once_in_order(client, publications, list(range(AFTER_RESTART)), offsets)
            assert not client.log.after(mark, "subscribing"), client.log.describe()
            assert not client.log.after(mark, "connecting"), client.log.describe()
