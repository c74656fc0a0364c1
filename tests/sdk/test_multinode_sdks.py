"""The official SDKs against three nodes of two shards each on one redis-server (the Redis engine).

Clients of both libraries, each on another node, publish to one history channel and all see one
sequence with the same offsets; presence asked through the SDK lists the subscribers of every node;
a client that reconnects after missing publications made on other nodes recovers them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk import scenarios
from tests.sdk.common import SHARDS, api, connection_token, run, unique
from tests.sdk.scenarios import connected, numbers_received, open_client, subscribed
from tests.support import redis_server as redis_support
from tests.support.redis_server import RedisServer
from tests.support.server import Server
from tests.support.waiting import eventually

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    if not redis_support.available():
        pytest.fail("redis-server is missing: make test installs it (make services)")
    tmp = tmp_path_factory.mktemp("sdk-nodes")
    with RedisServer(tmp / "redis") as redis:
        config: dict[str, Any] = {
            **scenarios.FEATURES_EXTRA,
            "engine": "redis",
            "redis_address": redis.address,
            "node_info_interval": "0.5s",
        }
        nodes: list[Server] = []
        try:
            for i in range(NODES):
                nodes.append(Server(tmp, shards=SHARDS, name=f"sdk-node-{i}", **config).start())
            eventually(
                lambda: all(len(n.api("info", {})["result"]["nodes"]) == NODES for n in nodes),
                timeout=10,
                what="every node to see the others",
            )
            yield nodes
        finally:
            for node in nodes:
                node.stop()


@pytest.fixture(params=["js", "python"])
def sdk(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _one_order_from_publishers_on_every_node(nodes: list[Server], sdk: str) -> None:
    channel = unique("hist:nodes")
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i, node in enumerate(nodes):
            library = sdk if i != 1 else ("python" if sdk == "js" else "js")  # both libraries at once
            client = await open_client(stack, library, node, f"node{i}", "json", connection_token(unique("u")))
            await connected(client)
            await client.subscribe(channel, recoverable=True)
            await subscribed(client, channel)
            clients.append(client)
        for n in range(12):
            await clients[n % NODES].publish(channel, {"n": n})
        sequences = []
        for client in clients:
            received = await numbers_received(client, channel, 12)
            sequences.append([(p["data"]["n"], p["offset"]) for p in received])
        assert sequences[0] == sequences[1] == sequences[2], sequences
        assert sorted(n for n, _ in sequences[0]) == list(range(12))
        offsets = [offset for _, offset in sequences[0]]
        assert offsets == list(range(offsets[0], offsets[0] + 12)), offsets


def test_publishers_on_every_node_one_order_everywhere(cluster: list[Server], sdk: str) -> None:
    run(_one_order_from_publishers_on_every_node(cluster, sdk), 90)


async def _presence_of_every_node(nodes: list[Server], sdk: str) -> None:
    channel = unique("room:nodes")
    users = [unique("p") for _ in nodes]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i, node in enumerate(nodes):
            client = await open_client(stack, sdk, node, f"node{i}", "json", connection_token(users[i]))
            await connected(client)
            await client.subscribe(channel)
            await subscribed(client, channel)
            clients.append(client)
        for client in clients:
            found = await client.presence(channel)
            assert sorted(entry["user"] for entry in found.values()) == sorted(users), found
            assert await client.presence_stats(channel) == {"num_clients": 3, "num_users": 3}


def test_presence_through_the_sdk_lists_every_node(cluster: list[Server], sdk: str) -> None:
    run(_presence_of_every_node(cluster, sdk), 90)


async def _recovery_of_publications_made_elsewhere(nodes: list[Server], sdk: str) -> None:
    channel = unique("hist:away")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, nodes[0], "away", "json", connection_token(unique("r")))
        await connected(client)
        await client.subscribe(channel, recoverable=True)
        first = await client.log.wait("subscribed", channel=channel, server_side=False)
        await api(nodes[1], "publish", {"channel": channel, "data": {"n": 0}})
        await numbers_received(client, channel, 1)
        await client.disconnect()
        gone = await client.log.wait("disconnected")
        after = client.log.events.index(gone) + 1
        for n in range(1, 11):
            await api(nodes[n % NODES], "publish", {"channel": channel, "data": {"n": n}})
        await client.connect()
        again = await client.log.wait("subscribed", channel=channel, server_side=False, start=after)
        assert again["recovered"] is True and again["epoch"] == first["epoch"], again
        received = await numbers_received(client, channel, 11)
        assert [p["data"]["n"] for p in received] == list(range(11))


def test_a_client_recovers_publications_made_on_other_nodes(cluster: list[Server], sdk: str) -> None:
    run(_recovery_of_publications_made_elsewhere(cluster, sdk), 90)
