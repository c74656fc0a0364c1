"""What the official SDKs must be able to do against Switchboard, written once for both SDKs.

Each scenario takes the server, the SDK (``"js"``: centrifuge-js in Node, ``"python"``:
centrifuge-python) and the protocol (``"json"`` or ``"protobuf"``), and drives real clients over
``/connection/websocket``. ``test_centrifuge_js.py`` and ``test_centrifuge_python.py`` run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Protocol

import websockets

from tests.integration.harness import Server
from tests.sdk.common import (
    EXPIRED_CLOSE_DELAY,
    EventLog,
    api,
    channel_sources,
    connection_token,
    connections,
    poll,
    subscription_token,
    unique,
    users_on_different_shards,
    ws_url,
)
from tests.sdk.drivers import NodeClient, PyClient

# What the connections API reports as the source of each channel subscription.
SOURCE_TOKEN = 1
SOURCE_SUBSCRIPTION_TOKEN = 3
SOURCE_CLIENT_ALLOWED = 6
SOURCE_SERVER_API = 10


class SdkClient(Protocol):
    label: str
    log: EventLog

    async def subscribe(
        self, channel: str, token: str = "", refresh_tokens: list[str] | None = None
    ) -> Any: ...

    async def publish(self, channel: str, data: Any) -> None: ...

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
        listed = await poll(lambda: connections(server, user=user), lambda c: not c, "no sessions left")
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
        listed = await poll(
            lambda: connections(server, user=user),
            lambda c: len(c) == 2 and first_id in c and channel_sources(c[first_id]) == expected,
            "both sessions with every channel",
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
        listed = await poll(
            lambda: connections(server, user=user),
            lambda c: news in channel_sources(c.get(client_id, {})),
            "the API subscription",
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
        listed = await poll(
            lambda: connections(server, user=user),
            lambda c: news not in channel_sources(c.get(client_id, {})),
            "the API unsubscription",
        )
        assert channel_sources(listed[client_id]) == {chat: SOURCE_CLIENT_ALLOWED}, listed
        # The client-side subscription is untouched and the connection is still up.
        assert not client.log.all("disconnected"), client.log.describe()
