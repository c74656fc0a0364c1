"""Protocol behaviours of Centrifugo v6 that both SDKs rely on: ``rpc`` without a handler is 108, and a
subscription with a state loader (``getState`` / ``get_state``) is told 112 when recovery fails, so that
the SDK loads the state again instead of going on with a gap."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from centrifuge import ReplyError

from tests.sdk.common import PROTOCOLS, SERVER_EXTRA, SHARDS, api, connection_token, run, unique
from tests.sdk.drivers import NodeClient
from tests.sdk.scenarios import SdkClient, connected, open_client, subscribed
from tests.support.server import API_KEY, Server

HISTORY = 3  # publications kept: more while a client is away cannot be recovered


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    short = {
        "name": "short",
        "history_size": HISTORY,
        "history_ttl": "300s",
        "allow_subscribe_for_client": True,
        "allow_history_for_subscriber": True,
        "allow_recovery": True,
    }
    extra = {**SERVER_EXTRA, "namespaces": [*SERVER_EXTRA["namespaces"], short]}
    with Server(tmp_path_factory.mktemp("v6-behaviours"), shards=SHARDS, **extra) as srv:
        yield srv


@pytest.fixture(params=["js", "python"])
def sdk(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def rpc_error_code(client: SdkClient, method: str) -> int:
    if isinstance(client, NodeClient):
        return int((await client.attempt("rpc", method=method, data={}))["code"])
    try:
        await client.rpc(method, {})
    except ReplyError as exc:
        return exc.code
    raise AssertionError("rpc without a handler succeeded")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rpc_without_a_handler_is_not_available(server: Server, sdk: str, protocol: str) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            user = unique(f"{sdk}-rpc")
            client = await open_client(stack, sdk, server, "rpc", protocol, connection_token(user))
            await connected(client)
            assert await rpc_error_code(client, "anything") == 108

    run(scenario(), 60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_state_is_loaded_again_after_an_unrecoverable_gap(server: Server, sdk: str, protocol: str) -> None:
    async def scenario() -> None:
        channel = unique("short:state")
        user = unique(f"{sdk}-state")
        loader = {"api": f"http://127.0.0.1:{server.port}/api", "key": API_KEY}
        async with contextlib.AsyncExitStack() as stack:
            client = await open_client(stack, sdk, server, "state", protocol, connection_token(user))
            await connected(client)
            await client.subscribe(channel, get_state=loader)
            await client.log.wait("get_state", channel=channel, n=1)
            await subscribed(client, channel)
            await api(server, "publish", {"channel": channel, "data": {"n": 0}})
            await client.log.wait("publication", channel=channel)
            # Away while more is published than the history keeps: recovery cannot fill the gap.
            await client.disconnect()
            await client.log.wait("disconnected")
            for n in range(1, HISTORY + 3):
                await api(server, "publish", {"channel": channel, "data": {"n": n}})
            mark = len(client.log.events)
            await client.connect()
            reload = await client.log.wait("get_state", channel=channel, n=2, start=mark, timeout=15)
            after = client.log.events.index(reload)
            # Subscribed again from the position the state loader returned, with nothing lost since.
            await client.log.wait("subscribed", channel=channel, start=after, timeout=15)
            assert not client.log.after(mark, "unsubscribed"), client.log.describe()
            await api(server, "publish", {"channel": channel, "data": {"n": 99}})
            latest = await client.log.wait("publication", channel=channel, start=after, timeout=15)
            assert latest["data"] == {"n": 99}, latest

    run(scenario(), 60)
